"""Serving overhead: one volume through the local gRPC server vs the same SavedModel called in process; prints JSON.

Default: a random-weight V-Net (n_filters 16, precision auto: bf16 only on CPUs with native bf16) exported with patch
112x112x80 and stride 18/18/4 into a temporary model base path, and a 190x138x88 volume (an LA-sized scan, 54 windows).
``--model-base-path`` serves an existing export instead (its newest version). ``--quick``: n_filters 4, patch 32x32x16,
a 48x40x24 volume, to check the script in seconds.

    python bench/bench_serving.py [--quick] [--model-base-path MODELS/sassnet] [--repeats 5] [--rest] [--output f.json]

Measured per call (median of ``--repeats``, modes interleaved, after one untimed warm-up call each):
- ``grpc_ms``: client-side wall time of PredictionService/Predict for the preprocessed volume (serialisation,
  loopback transport, input validation, the model, the answer's three outputs and their decoding);
- ``in_process_ms``: ``loaded.signatures["serving_default"](image=...)`` on the same SavedModel, outputs to numpy;
- ``overhead_pct`` = (grpc - in_process) / in_process * 100.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sassnet_tf  # noqa: E402,F401  (before TensorFlow: turns oneDNN on, sassnet_tf.utils.runtime)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sassnet_tf.serving.client import SegmentationClient, zscore  # noqa: E402
from sassnet_tf.serving.model_manager import list_versions  # noqa: E402
from sassnet_tf.serving.server import LocalModelServer  # noqa: E402

from report import emit_report  # noqa: E402

FULL = {"n_filters": 16, "patch": (112, 112, 80), "stride": (18, 18, 4), "volume": (190, 138, 88), "batch": 4}
QUICK = {"n_filters": 4, "patch": (32, 32, 16), "stride": (16, 16, 8), "volume": (48, 40, 24), "batch": 4}


def export_random_model(base: str, settings: dict, precision: str) -> None:
    """A random-weight V-Net exported as version 1 of ``base`` under ``precision``."""
    import keras

    from sassnet_tf.export import export_saved_model
    from sassnet_tf.models import build_vnet

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        vnet = build_vnet(n_filters=settings["n_filters"])
        export_saved_model(
            vnet, base, 1, patch_size=settings["patch"], stride=settings["stride"], threshold=0.5, gaussian=False,
            batch_size=settings["batch"], preprocessing={"normalize": "zscore", "downsample": 1}, config=None,
        )
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def interleaved_ms(calls: dict, repeats: int) -> dict:
    """Wall times (ms) of each named call, one untimed warm-up each, then ``repeats`` rounds alternating the order.

    Alternating keeps a slow drift of the machine's load (other processes) from favouring one mode.
    """
    for fn in calls.values():
        fn()  # first-call graph optimisation is not serving overhead
    times = {name: [] for name in calls}
    names = list(calls)
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            tick = time.perf_counter()
            calls[name]()
            times[name].append(1000.0 * (time.perf_counter() - tick))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and volume (seconds)")
    parser.add_argument("--model-base-path", help="serve this existing model base path instead of exporting one")
    parser.add_argument("--precision", default="auto",
                        help="dtype policy of the exported random model (auto: as `train.py --precision auto`)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per mode (median reported)")
    parser.add_argument("--rest", action="store_true", help="also time the REST API (JSON) for the same volume")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL

    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        if args.model_base_path:
            base = os.path.abspath(args.model_base_path)
            versions = list_versions(base)
            if not versions:
                parser.error(f"--model-base-path {base}: no numbered version folder")
            source = f"{base} (version {versions[-1]})"
        else:
            base = os.path.join(tmp, "sassnet")
            tick = time.perf_counter()
            from sassnet_tf.training.precision import resolve_precision

            args.precision = resolve_precision(args.precision)
            export_random_model(base, settings, args.precision)
            source = (f"random build_vnet({settings['n_filters']}) exported as {args.precision} "
                      f"in {time.perf_counter() - tick:.1f} s")
            versions = [1]
        version_path = os.path.join(base, str(versions[-1]))

        rng = np.random.default_rng(0)
        image = zscore(rng.normal(1.0, 1.0, size=settings["volume"]).astype(np.float32))

        loaded = tf.saved_model.load(version_path)
        serving_default = loaded.signatures["serving_default"]

        def in_process() -> dict:
            return {k: v.numpy() for k, v in serving_default(image=tf.constant(image)).items()}

        with LocalModelServer(base, port=0, rest_port=0 if args.rest else None, poll_seconds=0) as server:
            grpc_client = SegmentationClient(server.grpc_target, timeout=3600, retries=0)
            meta = grpc_client.metadata()
            calls = {"in_process": in_process, "grpc": lambda: grpc_client.predict({"image": image})}
            if args.rest:
                rest_client = SegmentationClient(f"127.0.0.1:{server.rest_port}", rest=True, timeout=3600, retries=0)
                calls["rest"] = lambda: rest_client.predict({"image": image})
            times = interleaved_ms(calls, args.repeats)
            grpc_client.close()

    grpc_times, in_process_times = times["grpc"], times["in_process"]
    grpc_ms, local_ms = statistics.median(grpc_times), statistics.median(in_process_times)
    result = {
        "benchmark": "serving",
        "quick": args.quick,
        "model": source,
        "patch_size": meta.get("patch_size"),
        "stride": meta.get("stride"),
        "dtype_policy": meta.get("dtype_policy"),
        "volume": list(settings["volume"]),
        "request_mib": round(image.nbytes / 2**20, 2),
        "repeats": args.repeats,
        "grpc_ms": round(grpc_ms, 1),
        "in_process_ms": round(local_ms, 1),
        "overhead_ms": round(grpc_ms - local_ms, 1),
        "overhead_pct": round(100.0 * (grpc_ms - local_ms) / local_ms, 2),
        "grpc_ms_all": [round(t, 1) for t in grpc_times],
        "in_process_ms_all": [round(t, 1) for t in in_process_times],
        "tensorflow": tf.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    if "rest" in times:
        result["rest_ms"] = round(statistics.median(times["rest"]), 1)
        result["rest_overhead_pct"] = round(100.0 * (result["rest_ms"] - local_ms) / local_ms, 2)
    emit_report(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
