"""Where a SASSNet training iteration's time goes, by TensorFlow op type; prints JSON.

    python bench/profile_train.py [--precision mixed_bfloat16] [--patch 112 112 80] [--steps 1] [--top 25]

Runs the step of bench/bench_train.py (synthetic batch 2+2, same model), warms it up twice, then traces `--steps`
steps with the TensorFlow profiler and sums the host-side op events of the trace by op type (Conv3D,
Conv3DBackpropFilterV2, Cast, FusedBatchNormV3, ...), by scope (which model and pass) and by op name. One inter-op
thread, so op times do not overlap and add up to the step (the intra-op pool still uses every core). Op types whose
kernels are oneDNN's show with their `_Mkl` names where TensorFlow rewrote them.
"""

import argparse
import collections
import glob
import json
import os
import tempfile
import time

from report import emit_report
from train_step import synthetic_train_step

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as `import sassnet_tf` does; keras is imported first here


def _op_events(logdir):
    """(op name, op type, seconds) of every TF op event on the host plane of the trace under `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        raise SystemExit(f"profile_train: the profiler wrote no *.xplane.pb under {logdir}")
    space = xplane_pb2.XSpace()
    with open(paths[0], "rb") as f:
        space.ParseFromString(f.read())
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if "tf_Compute" not in line.name and "Executor" not in line.name and "tf_" not in line.name:
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # TF op events are named "<op name>:<op type>"; anything else is framework bookkeeping.
                if ":" not in name or name.startswith(("Iterator", "ExecutorState", "EagerExecute")):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                yield op_name, op_type, event.duration_ps / 1e12


def _scope(op_name: str) -> str:
    """The model part an op belongs to: its first name component, two for gradients.

    e.g. "v_net_1" (the network step's forward), "gradient_tape/discriminator_3" (a D backward pass).
    """
    parts = op_name.split("/")
    return "/".join(parts[:2]) if parts[0] == "gradient_tape" and len(parts) > 1 else parts[0]


def run(args) -> dict:
    import tensorflow as tf

    step, batch, precision = synthetic_train_step(args.precision, args.patch, args.n_filters, args.ndf, args.mode,
                                                  args.d_reuse_forward)
    for _ in range(2):
        float(step(batch)["loss"])
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        t = time.perf_counter()
        for _ in range(args.steps):
            float(step(batch)["loss"])
        wall = (time.perf_counter() - t) / args.steps
        tf.profiler.experimental.stop()
        events = list(_op_events(logdir))
    by_type, by_name, by_scope = collections.Counter(), collections.Counter(), collections.Counter()
    for op_name, op_type, seconds in events:
        by_type[op_type] += seconds / args.steps
        by_name[f"{op_name}:{op_type}"] += seconds / args.steps
        by_scope[_scope(op_name)] += seconds / args.steps
    total = sum(by_type.values())
    return {"precision": precision, "mode": args.mode, "patch": list(args.patch), "batch": "2+2",
            "n_filters": args.n_filters, "ndf": args.ndf, "d_reuse_forward": args.d_reuse_forward,
            "seconds_per_iteration_traced": round(wall, 3), "op_seconds_total": round(total, 3),
            "by_scope": {k: round(v, 4) for k, v in by_scope.most_common(args.top)},
            "by_op_type": {k: round(v, 4) for k, v in by_type.most_common(args.top)},
            "by_op": {k: round(v, 4) for k, v in by_name.most_common(args.top)}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", default="mixed_bfloat16")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--patch", type=int, nargs=3, default=[112, 112, 80])
    p.add_argument("--n-filters", type=int, default=16)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--mode", default="sassnet", choices=["supervised", "sdm", "sassnet"])
    p.add_argument("--d-reuse-forward", action="store_true")
    p.add_argument("--top", type=int, default=25, help="how many op types and ops to list")
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args()
    emit_report({"benchmark": "train_profile", "cores": os.cpu_count(), "results": [run(args)]}, args.output)


if __name__ == "__main__":
    main()
