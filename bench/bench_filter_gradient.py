"""Convolution filter gradients in bfloat16 against float32 (casts included), per activation size; prints JSON.

    python bench/bench_filter_gradient.py [--repeats 5] [--quick] [--output f.json]

The evidence behind `sassnet_tf.models.safe_conv3d.slow_bf16_filter_gradient`: on AVX512-BF16 CPUs without AMX,
oneDNN's bf16 backward-weights kernels are slower than its float32 ones on large activations (the V-Net's
full-resolution level), faster on small ones. Each row times `Conv3DBackpropFilterV2` on random data in bf16 and
in float32 (the casts of both operands included, as the model pays them), and the bf16 forward pass beside them,
median of `repeats` after a warm-up, and says which the model's rule picks for that activation on this CPU. Pause
any background training first (SIGSTOP) and say so in BENCH_CONTEXT.
"""

import argparse
import os
import sys

from report import emit_report, median_seconds

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (batch, spatial size, input channels, output channels, kernel, stride): V-Net layers at full (112x112x80) and
# half (64x64x48) resolution, and sizes around the rule's threshold.
CASES = [
    (4, (112, 112, 80), 16, 16, 3, 1),  # block_9, full resolution
    (4, (112, 112, 80), 16, 32, 2, 2),  # down_1 (and up_8's filter gradient, same shapes)
    (4, (112, 112, 80), 1, 16, 3, 1),  # block_1: one input channel
    (4, (112, 112, 80), 8, 8, 3, 1),
    (2, (112, 112, 80), 16, 16, 3, 1),
    (1, (112, 112, 80), 16, 16, 3, 1),
    (4, (96, 96, 64), 16, 16, 3, 1),
    (4, (112, 112, 40), 16, 16, 3, 1),
    (4, (56, 56, 40), 32, 32, 3, 1),  # block_8, full resolution
    (4, (64, 64, 48), 16, 16, 3, 1),  # block_9, half resolution
]
QUICK = [(1, (16, 16, 16), 4, 4, 3, 1), (1, (16, 16, 16), 4, 8, 2, 2)]


def measure(cases, repeats: int) -> list:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import sassnet_tf  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
    import tensorflow as tf

    from sassnet_tf.models.safe_conv3d import slow_bf16_filter_gradient

    rows = []
    for batch, size, c_in, c_out, k, s in cases:
        x = tf.cast(tf.random.normal([batch, *size, c_in]), tf.bfloat16)
        dy = tf.cast(tf.random.normal([batch, *(n // s for n in size), c_out]), tf.bfloat16)
        padding = "SAME" if s == 1 else "VALID"
        seconds = {}
        for dtype in (tf.bfloat16, tf.float32):
            fn = tf.function(lambda x, dy, dtype=dtype: tf.raw_ops.Conv3DBackpropFilterV2(
                input=tf.cast(x, dtype), filter_sizes=[k, k, k, c_in, c_out], out_backprop=tf.cast(dy, dtype),
                strides=[1, s, s, s, 1], padding=padding))
            seconds[dtype.name] = median_seconds(lambda fn=fn: fn(x, dy).numpy(), repeats)
        kernel = tf.cast(tf.random.normal([k, k, k, c_in, c_out]), tf.bfloat16)
        forward = tf.function(lambda x: tf.nn.conv3d(x, kernel, [1, s, s, s, 1], padding))
        seconds["forward"] = median_seconds(lambda: forward(x).numpy(), repeats)
        gflop = 2 * batch * (size[0] // s) * (size[1] // s) * (size[2] // s) * k ** 3 * c_in * c_out / 1e9
        rows.append({"activation": [batch, *size, c_in], "kernel": [k, k, k, c_in, c_out], "stride": s,
                     "elements_per_sample": size[0] * size[1] * size[2] * c_in,
                     "seconds_bfloat16": round(seconds["bfloat16"], 4),
                     "seconds_float32_with_casts": round(seconds["float32"], 4),
                     "bf16_over_float32": round(seconds["bfloat16"] / seconds["float32"], 2),
                     "seconds_forward_bfloat16": round(seconds["forward"], 4),
                     "gflop": round(gflop, 2),
                     "gflop_per_second": {"bfloat16_filter_gradient": round(gflop / seconds["bfloat16"], 1),
                                          "float32_filter_gradient": round(gflop / seconds["float32"], 1),
                                          "bfloat16_forward": round(gflop / seconds["forward"], 1)},
                     "model_uses_float32": slow_bf16_filter_gradient([batch, *size, c_in], tf.bfloat16)})
        print(f"[bench_filter_gradient] {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two tiny cases: checks the script in seconds")
    parser.add_argument("--output", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    rows = measure(QUICK if args.quick else CASES, max(1, args.repeats))
    emit_report({"benchmark": "filter_gradient_bf16_vs_float32", "cores": os.cpu_count(),
                 "timing": f"median of {args.repeats} after a warm-up", "rows": rows}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
