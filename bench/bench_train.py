"""Seconds per full SASSNet training iteration (network + discriminator step) for each precision; prints JSON.

    python bench/bench_train.py [--precisions float32 mixed_bfloat16] [--steps 3] [--patch 112 112 80]

Each precision runs in its own process (the dtype policy is global; peak memory is per process). Batch 2 labeled +
2 unlabeled of synthetic patches fed from memory, so the figure is the step alone (bench_pipeline.py measures
the input pipeline).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_one(args) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sassnet_tf.models import build_discriminator, build_vnet
    from sassnet_tf.schedules import StepDecay
    from sassnet_tf.training.precision import apply_precision
    from sassnet_tf.training.sassnet import SASSNet
    from sassnet_tf.training.torch_sgd import TorchSGD

    precision = apply_precision(args.precision)
    keras.utils.set_random_seed(0)
    model = SASSNet(build_vnet(args.n_filters), build_discriminator(args.ndf), mode=args.mode,
                    d_reuse_forward=args.d_reuse_forward)
    model.compile(TorchSGD(StepDecay(0.01), momentum=0.9, coupled_weight_decay=1e-4),
                  keras.optimizers.Adam(1e-4, beta_1=0.9, beta_2=0.99, epsilon=1e-8))
    model.build_optimizers()
    rng = np.random.default_rng(0)
    shape = (2,) + tuple(args.patch) + (1,)
    batch = {"labeled_image": tf.constant(rng.normal(size=shape), tf.float32),
             "label": tf.constant((rng.random(shape) > 0.9).astype(np.float32)),
             "sdm": tf.constant(rng.uniform(-1, 1, size=shape), tf.float32),
             "unlabeled_image": tf.constant(rng.normal(size=shape), tf.float32)}
    step = tf.function(model.train_step)
    t = time.perf_counter()
    float(step(batch)["loss"])
    first = time.perf_counter() - t
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        float(step(batch)["loss"])
        times.append(time.perf_counter() - t)
    return {"precision": precision, "mode": args.mode, "d_reuse_forward": args.d_reuse_forward,
            "patch": list(args.patch), "batch": "2+2", "n_filters": args.n_filters,
            "seconds_per_iteration_median": statistics.median(times), "seconds_per_iteration_all": times,
            "first_call_seconds": first,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    p.add_argument("--precision", help=argparse.SUPPRESS)  # one precision, in the child process
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--patch", type=int, nargs=3, default=[112, 112, 80])
    p.add_argument("--n-filters", type=int, default=16)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--mode", default="sassnet", choices=["supervised", "sdm", "sassnet"])
    p.add_argument("--d-reuse-forward", action="store_true")
    args = p.parse_args()
    if args.precision:
        print(json.dumps(run_one(args)))
        return
    results = []
    for precision in args.precisions:
        cmd = [sys.executable, __file__, "--precision", precision, "--steps", str(args.steps), "--patch",
               *map(str, args.patch), "--n-filters", str(args.n_filters), "--ndf", str(args.ndf), "--mode", args.mode]
        if args.d_reuse_forward:
            cmd.append("--d-reuse-forward")
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            results.append({"precision": precision, "error": out.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "train_iteration", "cpu": platform.processor() or platform.machine(),
                      "cores": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
