"""``python -m sassnet_tf.serving.server`` as its own process: 8 concurrent clients, bounded memory, and a graceful
exit on SIGTERM."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.serving.conftest import labels_match, sigmoid

REPO = pathlib.Path(__file__).resolve().parents[2]
SHAPE = (64, 64, 32)  # 512 KiB in, 1.4 MiB out per request: a leak of every request would show in the RSS
CLIENTS, REQUESTS = 8, 5


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc (Linux)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("VmRSS not found")


@pytest.fixture(scope="module")
def server_process(toy_base, tmp_path_factory):
    if not pathlib.Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the server's memory")
    log_path = tmp_path_factory.mktemp("server_log") / "server.log"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would block the server's logging
        process = subprocess.Popen(
            [sys.executable, "-m", "sassnet_tf.serving.server", "--model-base-path", toy_base, "--port", "0",
             "--rest-port", "0", "--poll-seconds", "0", "--workers", "4", "--max-message-mb", "16"],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env,
        )
    deadline = time.monotonic() + 90
    match = None
    while match is None and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        match = re.search(r"gRPC 127\.0\.0\.1:(\d+), REST http://127\.0\.0\.1:(\d+)",
                          log_path.read_text(errors="replace"))
    if match is None:
        process.kill()
        raise AssertionError(f"server did not start:\n{log_path.read_text(errors='replace')}")
    yield process, int(match.group(1)), log_path
    if process.poll() is None:
        process.kill()
        process.wait()


def run_clients(port: int, seed: int) -> list:
    limit = 16 << 20
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    failures = []

    def one_client(index: int) -> None:
        rng = np.random.default_rng(seed + index)
        for _ in range(REQUESTS):
            image = rng.normal(size=SHAPE).astype(np.float32)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "sassnet"
            request.inputs["image"].CopyFrom(tf.make_tensor_proto(image))
            try:
                response = stub.Predict(request, timeout=60)
                probability = tf.make_ndarray(response.outputs["probability"])
                label = tf.make_ndarray(response.outputs["label"])
                if not np.allclose(probability, sigmoid(image), rtol=1e-5, atol=1e-6):
                    failures.append(f"client {index}: wrong probability")
                if not labels_match(label, image):
                    failures.append(f"client {index}: wrong label")
            except grpc.RpcError as err:
                failures.append(f"client {index}: {err.code().name} {err.details()}")

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    return failures


def test_concurrent_clients_are_answered_correctly_with_bounded_memory(server_process):
    process, port, log_path = server_process
    assert run_clients(port, seed=0) == []  # warm-up round: allocator arenas and caches settle
    before = rss_bytes(process.pid)
    for round_index in range(2):
        assert run_clients(port, seed=100 * (round_index + 1)) == []
    growth = rss_bytes(process.pid) - before
    # 80 requests move ~150 MiB through the server; keeping them would grow RSS far beyond this bound.
    print(f"RSS growth {growth / 2**20:.1f} MiB, before {before / 2**20:.0f} MiB")
    assert growth < 48 << 20, f"server RSS grew by {growth / 2**20:.1f} MiB over 80 requests"
    log = log_path.read_text(errors="replace")
    assert (log.count("grpc predict model=sassnet version=1 signature=serving_default status=OK")
            == 3 * CLIENTS * REQUESTS)


def test_sigterm_shuts_down_gracefully(server_process):
    process, _, log_path = server_process
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    log = log_path.read_text(errors="replace")
    assert "received SIGTERM, shutting down" in log and "stopped" in log
