"""Two workers on 127.0.0.1 train together with MultiWorkerMirroredStrategy (TF_CONFIG), through train.py."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.training.tiny_la import TINY, write_tiny_la

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train(tmp_path):
    root = write_tiny_la(tmp_path / "la")
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        out = tmp_path / ("run" if index == 0 else f"worker{index}")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sassnet_tf.train", "--data-root", root, "--output", str(out), "--labeled", "2",
             "--iterations", "3", "--no-progress", *TINY],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("multi-worker training hung")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    assert "strategy: multi_worker (CollectiveAllReduceStrategy) with 2 replica(s)" in logs[0]
    state = json.loads((tmp_path / "run" / "run.json").read_text())
    assert state["status"] == "completed" and state["iteration"] == 3
    assert (tmp_path / "run" / "weights" / "vnet_last.weights.h5").is_file()
    # only the chief writes a run folder
    assert not (tmp_path / "worker1" / "run.json").exists()
    ckpt = np.load(sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*.npz"))[-1])
    assert all(np.isfinite(ckpt[k]).all() for k in ckpt.files if k != "__index__" and ckpt[k].dtype.kind == "f")
