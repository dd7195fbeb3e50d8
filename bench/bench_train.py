"""Seconds per full SASSNet training iteration (network + discriminator step) for each precision; prints JSON.

    python bench/bench_train.py [--precisions float32 mixed_bfloat16] [--steps 3] [--patch 112 112 80]
        [--n-filters 16] [--ndf 64] [--onednn on|off|default]

Each precision runs in its own process (the dtype policy is global; peak memory is per process). Batch 2 labeled +
2 unlabeled of synthetic patches fed from memory, so the figure is the step alone (bench_pipeline.py measures
the input pipeline). `--onednn` sets TF_ENABLE_ONEDNN_OPTS in the child before TensorFlow loads: TF turns its
oneDNN kernels on by default only on CPUs with AVX-512 class features, and on this AVX2 EPYC "on" makes the
convolutions (above all their gradients) several times faster (docs/PERFORMANCE.md). The default here is "on".
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

from report import emit_report
from train_step import synthetic_train_step

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _vnet_conv_macs(batch, patch, n):
    """Multiply-adds of one V-Net forward pass, convolutions only (the 3x3x3 stages, 2x2x2 down/up, heads)."""
    voxels = batch * patch[0] * patch[1] * patch[2]
    macs, c = 0, 1
    for level, n_convs in enumerate((1, 2, 3, 3, 3)):
        v, width = voxels // 8 ** level, n * 2 ** level
        if level:
            macs += v * 8 * c * width  # 2x2x2 stride-2 down conv, v output voxels
        macs += v * 27 * c * width + (n_convs - 1) * v * 27 * width * width
        c = width
    for level, n_convs in zip((3, 2, 1, 0), (3, 3, 2, 1)):
        v, width = voxels // 8 ** level, n * 2 ** level
        macs += v * c * width  # 2x2x2 stride-2 transposed conv: one tap per output voxel
        macs += n_convs * v * 27 * width * width
        c = width
    return macs + 2 * voxels * n, voxels * 27 * n  # (total, first conv: no input gradient needed)


def _disc_conv_macs(batch, patch, ndf):
    """Multiply-adds of one discriminator forward pass, as (total, the two first convs)."""
    size = [n // 2 for n in patch]
    first = 2 * batch * size[0] * size[1] * size[2] * 64 * 1 * ndf
    macs, c = first, ndf
    for width in (2 * ndf, 4 * ndf, 8 * ndf):
        size = [n // 2 for n in size]
        macs += batch * size[0] * size[1] * size[2] * 64 * c * width
        c = width
    return macs + batch * 8 * ndf * 2, first


def iteration_gflop(patch, n_filters, ndf, labeled=2, unlabeled=2, d_reuse_forward=False):
    """Convolution FLOPs (2 per multiply-add) of one `sassnet` training iteration, from the layer shapes.

    V-Net forward on all patches + backward (input and filter gradients: 2x forward, minus the first conv's input
    gradient); discriminator forward on the unlabeled SDMs + input gradients (for the adversarial loss); unless
    reused, a second V-Net forward (inference) for the discriminator step; discriminator forward + filter
    gradients + input gradients on all patches. Normalisation and elementwise ops are not counted.
    """
    b = labeled + unlabeled
    vnet, vnet_first = _vnet_conv_macs(b, patch, n_filters)
    d_u, d_u_first = _disc_conv_macs(unlabeled, patch, ndf)
    d_all, d_all_first = _disc_conv_macs(b, patch, ndf)
    macs = 3 * vnet - vnet_first + (0 if d_reuse_forward else vnet)
    macs += 2 * d_u - d_u_first // 2  # the image branch needs no input gradient
    macs += 3 * d_all - d_all_first
    return 2 * macs / 1e9


def run_one(args) -> dict:
    step, batch, precision = synthetic_train_step(args.precision, args.patch, args.n_filters, args.ndf, args.mode,
                                                  args.d_reuse_forward)
    t = time.perf_counter()
    float(step(batch)["loss"])
    first = time.perf_counter() - t
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        float(step(batch)["loss"])
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    gflop = iteration_gflop(args.patch, args.n_filters, args.ndf, d_reuse_forward=args.d_reuse_forward)
    return {"precision": precision, "mode": args.mode, "ndf": args.ndf,
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
            "d_reuse_forward": args.d_reuse_forward,
            "patch": list(args.patch), "batch": "2+2", "n_filters": args.n_filters,
            "seconds_per_iteration_median": median, "seconds_per_iteration_all": times,
            "first_call_seconds": first, "conv_gflop_per_iteration": round(gflop, 1),
            "conv_gflop_per_second": round(gflop / median, 1) if args.mode == "sassnet" else None,
            # The peak depends on the CPU (cores x FMA pipes x lanes x 2 x clock), which a VM does not reliably
            # report, so the user gives it: 156.8 float32 GFLOP/s on the 2-core AVX2 EPYC of docs/PERFORMANCE.md.
            "fraction_of_peak": (round(gflop / median / args.peak_gflops, 3)
                                 if args.mode == "sassnet" and args.peak_gflops else None),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "load_average_1_5_15_after": list(os.getloadavg())}


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
    p.add_argument("--onednn", default="on", choices=["on", "off", "default"],
                   help="TF_ENABLE_ONEDNN_OPTS=1 / =0 / left as in the environment")
    p.add_argument("--peak-gflops", type=float,
                   help="this CPU's peak GFLOP/s for the precision measured; adds fraction_of_peak to the JSON")
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args()
    # The V-Net's four stride-2 downsamplings (sassnet_tf's PATCH_MULTIPLE, not imported: importing the package sets
    # TF_ENABLE_ONEDNN_OPTS here and would undo --onednn default in the children). Keras alone names no axis.
    if any(n < 16 or n % 16 for n in args.patch):
        p.error(f"--patch {' '.join(map(str, args.patch))}: each axis must be a positive multiple of 16 (the V-Net "
                "halves it four times), e.g. 112 112 80 or 64 64 48")
    if args.precision:
        print(json.dumps(run_one(args)))
        return
    results = []
    load_before = list(os.getloadavg())
    for precision in args.precisions:
        cmd = [sys.executable, __file__, "--precision", precision, "--steps", str(args.steps), "--patch",
               *map(str, args.patch), "--n-filters", str(args.n_filters), "--ndf", str(args.ndf), "--mode", args.mode]
        if args.d_reuse_forward:
            cmd.append("--d-reuse-forward")
        if args.peak_gflops:
            cmd += ["--peak-gflops", str(args.peak_gflops)]
        env = dict(os.environ)
        if args.onednn != "default":
            env["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            results.append({"precision": precision, "error": out.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    emit_report({"benchmark": "train_iteration", "cpu": platform.processor() or platform.machine(),
                 "cores": os.cpu_count(), "load_average_1_5_15_before": load_before, "results": results}, args.output)


if __name__ == "__main__":
    main()
