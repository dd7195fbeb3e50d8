"""Training-pipeline speed on the real LA data: case loading, then patches and batches per second of
`make_train_dataset` (rot90 + flip + crop + SDM per labeled patch) with nothing else running.

Prints one JSON object. Default: 16 labeled + 16 unlabeled cases from ../shared/data/LA, patch 112x112x80,
batches of 2 + 2, 2 parallel calls per stream, 20 timed batches after 2 warm-up batches.
``--quick`` reads 2 + 2 cases and times 4 batches (a check that the script works).

    python bench/bench_pipeline.py [--data-root DIR] [--labeled 16] [--unlabeled 16] [--parallel 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from report import emit_report  # noqa: E402

DEFAULT_ROOT = os.path.join(os.path.dirname(REPO), "shared", "data", "LA")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=DEFAULT_ROOT, help=f"LA dataset root (default {DEFAULT_ROOT})")
    p.add_argument("--list", default="train.list", help="list file the cases are taken from (its head)")
    p.add_argument("--labeled", type=int, default=16, help="labeled cases read")
    p.add_argument("--unlabeled", type=int, default=16, help="unlabeled cases read (after the labeled ones)")
    p.add_argument("--patch", type=int, nargs=3, default=[112, 112, 80], metavar=("H", "W", "D"))
    p.add_argument("--labeled-bs", type=int, default=2)
    p.add_argument("--unlabeled-bs", type=int, default=2)
    p.add_argument("--parallel", type=int, default=2, help="num_parallel_calls per stream (0 = autotune)")
    p.add_argument("--prefetch", type=int, default=2)
    p.add_argument("--batches", type=int, default=20, help="timed batches")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first (tracing, first SDMs)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--quick", action="store_true", help="2 + 2 cases, 4 timed batches")
    p.add_argument("--output", help="also write the JSON here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.labeled, args.unlabeled, args.batches, args.warmup = 2, 2, 4, 1
    if not os.path.isdir(args.data_root):
        print(f"error: LA data not found at {args.data_root}; pass --data-root DIR (the folder holding "
              "train.list and '2018LA_Seg_Training Set/')", file=sys.stderr)
        return 2

    import numpy as np
    import tensorflow as tf

    from sassnet_tf.data.dataset_layout import open_dataset
    from sassnet_tf.data.errors import DataError
    from sassnet_tf.data.pipeline import centre_crop, load_cases, make_train_dataset
    from sassnet_tf.data.sdm import compute_sdm

    try:
        layout = open_dataset(args.data_root, format="la")
        ids = layout.read_list(args.list)
        if args.labeled + args.unlabeled > len(ids):
            raise DataError(f"{layout.list_path(args.list)}: {args.labeled} + {args.unlabeled} cases asked for, "
                            f"the list holds {len(ids)}")
        tick = time.perf_counter()
        labeled = load_cases(layout, ids[: args.labeled])
        unlabeled = load_cases(layout, ids[args.labeled: args.labeled + args.unlabeled], read_label=False)
        load_seconds = time.perf_counter() - tick
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # The SDM alone (the dominant cost: two exact EDTs per labeled patch), on centre crops, before the pipeline
    # runs (its workers would compete for the CPU).
    sdm_times = []
    for case in labeled[:4]:
        label = centre_crop(case.label, tuple(args.patch))
        t = time.perf_counter()
        compute_sdm(label)
        sdm_times.append(time.perf_counter() - t)

    ds = make_train_dataset(labeled, unlabeled, patch_size=tuple(args.patch), labeled_bs=args.labeled_bs,
                            unlabeled_bs=args.unlabeled_bs, seed=args.seed, num_parallel_calls=args.parallel,
                            prefetch=args.prefetch)
    iterator = iter(ds)
    tick = time.perf_counter()
    for _ in range(args.warmup):
        next(iterator)
    warmup_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    for _ in range(args.batches):
        batch = next(iterator)
    seconds = time.perf_counter() - tick
    batch = {k: v.numpy() for k, v in batch.items()}

    per_batch = args.labeled_bs + args.unlabeled_bs
    result = {
        "benchmark": "train_pipeline",
        "data_root": os.path.abspath(args.data_root),
        "labeled_cases": len(labeled),
        "unlabeled_cases": len(unlabeled),
        "load_seconds": round(load_seconds, 3),
        "load_seconds_per_case": round(load_seconds / max(len(labeled) + len(unlabeled), 1), 3),
        "patch_size": list(args.patch),
        "labeled_bs": args.labeled_bs,
        "unlabeled_bs": args.unlabeled_bs,
        "num_parallel_calls": args.parallel,
        "prefetch": args.prefetch,
        "timed_batches": args.batches,
        "warmup_seconds": round(warmup_seconds, 3),
        "batches_per_second": round(args.batches / seconds, 3),
        "patches_per_second": round(args.batches * per_batch / seconds, 3),
        "seconds_per_batch": round(seconds / args.batches, 3),
        "sdm_seconds_per_patch": round(float(np.median(sdm_times)), 3),
        "label_fraction_last_batch": round(float(batch["label"].mean()), 4),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
    }
    emit_report(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
