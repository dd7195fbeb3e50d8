"""Is this CPU's bf16 convolution right? Each pass (forward, input gradient, filter gradient) of raw TensorFlow
conv3d ops in bf16 against float32, over short and long axes; prints JSON.

    python bench/probe_bf16_conv.py [--output probe.json]

A correctness probe, not a timing: it reproduces the fault behind sassnet_tf/models/safe_conv3d.py (oneDNN's
``jit_bf16:avx512_core_bf16`` filter gradient of a stride-1 "SAME" convolution is garbage when the first spatial axis
n satisfies 1 < n < kernel size, on AVX512-BF16 CPUs without AMX) on whichever CPU runs it, and shows whether a new
CPU kind or TensorFlow release has faults of its own. `error` is max |bf16 - float32| / max |float32| over a few
repeats (NaN when a value is not finite); bf16 rounding alone gives < 0.01. The ops are TensorFlow's own, not
sassnet_tf's (which avoids the faulty case): "fault" marks an error above 0.05.
"""

import argparse
import os
import sys

from report import emit_report

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (kernel, stride, padding, first spatial axes tried); the other two axes are 6.
CASES = [(3, 1, "SAME", (1, 2, 3, 4)), (5, 1, "SAME", (2, 4, 5)), (2, 2, "VALID", (2, 4)), (4, 2, "SAME", (2, 4)),
         (2, 1, "VALID", (2, 3))]
CHANNELS = [(8, 16), (32, 32)]


def _passes(tf, x, w, dy, k, s, padding):
    strides = [1, s, s, s, 1]
    return {
        "forward": tf.nn.conv3d(x, w, strides, padding),
        "input_gradient": tf.raw_ops.Conv3DBackpropInputV2(input_sizes=x.shape, filter=w, out_backprop=dy,
                                                           strides=strides, padding=padding),
        "filter_gradient": tf.raw_ops.Conv3DBackpropFilterV2(input=x, filter_sizes=w.shape, out_backprop=dy,
                                                             strides=strides, padding=padding),
    }


def probe(repeats: int = 3) -> list:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    rows = []
    for k, s, padding, firsts in CASES:
        for first in firsts:
            for cin, cout in CHANNELS:
                x = np.maximum(rng.normal(size=(4, first, 6, 6, cin)), 0).astype(np.float32)
                w = (rng.normal(size=(k, k, k, cin, cout)) * 0.1).astype(np.float32)
                out_shape = tf.nn.conv3d(x, w, [1, s, s, s, 1], padding).shape
                dy = (rng.normal(size=out_shape) * 1e-3).astype(np.float32)
                ref = {n: v.numpy() for n, v in _passes(tf, *map(tf.constant, (x, w, dy)), k, s, padding).items()}
                errors = {n: 0.0 for n in ref}
                for _ in range(repeats):
                    got = _passes(tf, *(tf.constant(a, tf.bfloat16) for a in (x, w, dy)), k, s, padding)
                    for name, value in got.items():
                        value = tf.cast(value, tf.float32).numpy()
                        err = (float(np.abs(value - ref[name]).max() / (np.abs(ref[name]).max() + 1e-30))
                               if np.isfinite(value).all() else float("nan"))
                        errors[name] = err if np.isnan(err) or np.isnan(errors[name]) else max(errors[name], err)
                rows.append({"kernel": k, "stride": s, "padding": padding, "input": [4, first, 6, 6, cin],
                             "filters": cout, "error": {n: round(e, 4) for n, e in errors.items()},
                             "fault": [n for n, e in errors.items() if not e <= 0.05]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", help="also write the JSON report here (atomically)")
    args = parser.parse_args(argv)
    import sassnet_tf  # noqa: F401  oneDNN on, as in training
    from sassnet_tf.utils.runtime import onednn_enabled

    rows = probe(args.repeats)
    faults = [f"k{r['kernel']} s{r['stride']} {r['padding']} {r['input']}: {', '.join(r['fault'])}"
              for r in rows if r["fault"]]
    emit_report({"benchmark": "bf16_conv_probe", "onednn": onednn_enabled(), "faults": faults, "cases": rows},
                args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
