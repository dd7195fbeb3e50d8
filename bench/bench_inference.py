"""Sliding-window inference speed: seconds per window (batch 1 and batch N) and per LA-sized volume, per precision.

Prints one JSON object (progress on stderr). Default: V-Net n_filters 16, patch 112x112x80, a 190x138x88 volume at
the paper's stride 18/18/4 (54 windows) and at a faster stride 56/56/40 (12 windows), float32 and mixed_bfloat16.
On a CPU without native bf16 (AVX512-BF16 / AMX) mixed_bfloat16 is emulated and ~30x slower: only single windows are
timed then (batch 1, once). The 1-minute load average before and after is recorded: on a shared machine it explains
outliers. ``--quick`` runs a tiny configuration (seconds) to check that the script works.

    python bench/bench_inference.py [--quick] [--batch 4] [--precisions float32 mixed_bfloat16] [--output f.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sassnet_tf  # noqa: E402,F401  (before TensorFlow: turns oneDNN on, sassnet_tf.utils.runtime)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sassnet_tf.inference.sliding_window import keras_predict_fn, sliding_window_inference, window_starts  # noqa: E402
from sassnet_tf.models import build_vnet  # noqa: E402
from sassnet_tf.training.precision import cpu_has_fast_bf16, cpu_has_native_bf16  # noqa: E402

from report import emit_report, timings  # noqa: E402

FULL = {"n_filters": 16, "patch": (112, 112, 80), "volume": (190, 138, 88), "strides": [(18, 18, 4), (56, 56, 40)],
        "repeats": 4, "volume_repeats": 3}
QUICK = {"n_filters": 4, "patch": (48, 48, 32), "volume": (70, 60, 40), "strides": [(12, 12, 8), (24, 24, 16)],
         "repeats": 1, "volume_repeats": 1}


def _progress(message: str) -> None:
    print(f"[bench_inference] {message}", file=sys.stderr, flush=True)


def bench_precision(precision: str, settings: dict, batch: int, volumes: bool = True) -> dict:
    """Time one precision: windows at batch 1 and `batch`, then (if `volumes`) whole volumes per stride."""
    keras.mixed_precision.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    vnet = build_vnet(n_filters=settings["n_filters"])
    predict = keras_predict_fn(vnet)
    patch = settings["patch"]
    result = {"precision": precision, "windows": {}, "volumes": []}

    forward = tf.function(predict, input_signature=[tf.TensorSpec([None, *patch, 1], tf.float32)])
    rng = np.random.default_rng(0)
    # Emulated bf16 is so slow that one window, timed once, tells enough.
    for n in sorted({1, batch}) if volumes else [1]:
        x = tf.constant(rng.normal(size=(n, *patch, 1)).astype(np.float32))
        forward(x)["seg"].numpy()  # warm-up (trace + oneDNN primitive creation)
        seconds, times = timings(lambda: forward(x)["seg"].numpy(), settings["repeats"] + 1 if volumes else 1,
                                 warmup=False)
        result["windows"][f"batch_{n}"] = {"seconds_per_call": seconds, "seconds_per_window": seconds / n,
                                           "seconds_per_call_all": times}
        _progress(f"{precision} batch {n}: {seconds / n:.3f} s per window")

    if not volumes:
        keras.mixed_precision.set_dtype_policy("float32")
        return result
    volume = tf.constant(rng.normal(size=settings["volume"]).astype(np.float32))
    # One voxel larger than the patch on each axis: traces the function and runs 8 windows, cheaply.
    warmup = tf.constant(rng.normal(size=[p + 1 for p in patch]).astype(np.float32))
    for stride in settings["strides"]:
        n_windows = int(np.prod([len(window_starts(s, p, st)) for s, p, st in zip(settings["volume"], patch, stride)]))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
        def segment(image, stride=stride):
            return sliding_window_inference(image, predict, patch, stride, batch_size=batch)

        segment(warmup)["label"].numpy()  # trace + warm-up
        # The first run also creates the oneDNN primitives of the smaller last batch: with >= 3 runs the median is
        # the steady state of a server that has seen one volume.
        seconds, times = timings(lambda: segment(volume)["label"].numpy(), settings["volume_repeats"], warmup=False)
        result["volumes"].append(
            {"stride": list(stride), "batch_size": batch, "windows": n_windows, "seconds_per_volume": seconds,
             "seconds_per_window": seconds / n_windows, "seconds_per_volume_all": times}
        )
        _progress(f"{precision} stride {list(stride)}: {n_windows} windows, {seconds:.1f} s per volume")
    keras.mixed_precision.set_dtype_policy("float32")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and volume: checks the script in seconds")
    parser.add_argument("--batch", type=int, default=4, help="windows per forward pass for 'batch N' (default 4)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
                        choices=["float32", "mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--output", help="also write the JSON to this file")
    parser.add_argument("--force", action="store_true", help="time whole volumes even with emulated bf16")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    settings = QUICK if args.quick else FULL
    native_bf16, fast_bf16 = cpu_has_native_bf16(), cpu_has_fast_bf16()
    results = []
    load_before = os.getloadavg()
    for precision in args.precisions:
        emulated = precision == "mixed_bfloat16" and not native_bf16 and not args.force
        if emulated:
            _progress("no native bf16 (AVX512-BF16 / AMX) on this CPU: oneDNN emulates it, ~30x slower than "
                      "float32; timing single windows only (--force for whole volumes)")
        result = bench_precision(precision, settings, args.batch, volumes=not emulated)
        if emulated:
            result["note"] = "emulated bf16 (no AVX512-BF16/AMX): whole volumes skipped"
        results.append(result)
    report = {
        "benchmark": "sliding_window_inference",
        "quick": args.quick,
        "model": {"n_filters": settings["n_filters"], "patch_size": list(settings["patch"])},
        "volume_shape": list(settings["volume"]),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "native_bf16": native_bf16,
        "auto_picks_bf16": fast_bf16,
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "timing": f"windows: median of {settings['repeats'] + 1} calls after a warm-up call; volumes: median of "
                  f"{settings['volume_repeats']} runs after a warm-up on a smaller volume",
        "results": results,
    }
    emit_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
