"""The machine's measured compute peak: float32 and bfloat16 matmuls and 1x1x1 convolutions; prints JSON.

    python bench/bench_peak.py [--threads 2] [--repeats 7] [--output peak.json]

The denominators of docs/PERFORMANCE.md's "fraction of peak": a large matmul (oneDNN / Eigen GEMM) and a 1x1x1
Conv3D over a V-Net-sized tensor (a GEMM behind the convolution API, channels 64 -> 64), each in float32 and in
bfloat16 (on AVX512-BF16 / AMX CPUs oneDNN's bf16 kernels; elsewhere TensorFlow falls back to emulation, which this
shows as a low number). Median GFLOP/s over `repeats` timed runs after one warm-up; 2 FLOPs per multiply-add.
Pause any background training first (SIGSTOP) and say so in BENCH_CONTEXT.
"""

import argparse
import os
import sys

from report import emit_report, median_seconds

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(threads: int, repeats: int, n: int = 2048, conv_shape=(2, 56, 56, 40, 64)) -> list:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import sassnet_tf  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    rows = []
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.cast(tf.random.normal((n, n)), dtype)
        b = tf.cast(tf.random.normal((n, n)), dtype)
        matmul = tf.function(lambda: tf.matmul(a, b))
        seconds = median_seconds(lambda: matmul().numpy(), repeats)
        rows.append({"op": f"matmul {n}x{n}x{n}", "dtype": dtype.name, "seconds": round(seconds, 4),
                     "gflops": round(2.0 * n ** 3 / seconds / 1e9, 1)})
        x = tf.cast(tf.random.normal(conv_shape), dtype)
        channels = conv_shape[-1]
        w = tf.cast(tf.random.normal((1, 1, 1, channels, channels)), dtype)
        conv = tf.function(lambda: tf.nn.conv3d(x, w, [1] * 5, "VALID"))
        seconds = median_seconds(lambda: conv().numpy(), repeats)
        voxels = conv_shape[0] * conv_shape[1] * conv_shape[2] * conv_shape[3]
        rows.append({"op": f"conv3d 1x1x1 {list(conv_shape)} {channels}->{channels}", "dtype": dtype.name,
                     "seconds": round(seconds, 4), "gflops": round(2.0 * voxels * channels ** 2 / seconds / 1e9, 1)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    rows = measure(args.threads, args.repeats)
    peak = {dtype: max(r["gflops"] for r in rows if r["dtype"] == dtype) for dtype in ("float32", "bfloat16")}
    emit_report({"benchmark": "peak", "threads": args.threads, "repeats": args.repeats, "peak_gflops": peak,
                 "rows": rows}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
