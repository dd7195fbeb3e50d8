"""`make demo`: the main job end to end on the built-in phantom data.

train (configs/phantom_demo.yaml) -> evaluate on the phantom test list -> export a SavedModel -> serve it with the
local TF-Serving-compatible server -> segment a test scan (NIfTI in, NIfTI out) through the gRPC client.
Re-running resumes the training run and exports a new model version.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Optional

log = logging.getLogger("sassnet_tf")


def _step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run(output: str, config_path: str, overrides: dict, progress: bool = True) -> dict:
    from sassnet_tf import evaluate
    from sassnet_tf.config import load_config
    from sassnet_tf.data.dataset_layout import open_dataset
    from sassnet_tf.data.io import read_case, write_nifti
    from sassnet_tf.export import cli as export_cli
    from sassnet_tf.serving import client as serving_client
    from sassnet_tf.serving.server import LocalModelServer
    from sassnet_tf.training.run_dir import RunDir
    from sassnet_tf.training.trainer import Trainer, resolve_data_root

    output = os.path.abspath(output)
    run_dir = os.path.join(output, "run")
    config = load_config(config_path, overrides)
    resume = RunDir(run_dir).exists()
    if resume:
        config = load_config(RunDir(run_dir).config_path, {k: v for k, v in overrides.items()
                                                          if k == "train.iterations"})

    _step(f"1/4 train ({'resuming ' if resume else ''}{run_dir})")
    t0 = time.time()
    state = Trainer(config, run_dir, resume=resume, progress=progress).fit()
    train_seconds = time.time() - t0
    root, fmt = resolve_data_root(config)

    _step("2/4 evaluate (sliding window, Dice / Jaccard / 95HD / ASD)")
    eval_dir = os.path.join(output, "eval")
    code = evaluate.main(["--model", run_dir, "--data-root", root, "--format", fmt, "--list", config.data.test_list,
                          "--output", eval_dir])
    if code:
        raise SystemExit(code)

    _step("3/4 export a SavedModel for TensorFlow Serving")
    base = os.path.join(output, "models", "sassnet")
    code = export_cli.main(["--run", run_dir, "--output", base])
    if code:
        raise SystemExit(code)

    _step("4/4 serve locally and segment a scan through the gRPC client")
    layout = open_dataset(root, format=fmt)
    case_id = layout.read_list(config.data.test_list)[0]
    case = read_case(layout.case_path(case_id), read_label=False)
    served = os.path.join(output, "served")
    os.makedirs(served, exist_ok=True)
    scan = os.path.join(served, f"{case_id}_scan.nii.gz")
    write_nifti(scan, case.image, case.affine)
    server = LocalModelServer(base, model_name="sassnet", port=0, rest_port=0)
    server.start()
    try:
        mask = os.path.join(served, f"{case_id}_mask.nii.gz")
        t0 = time.time()
        code = serving_client.main(["--server", server.grpc_target, "--model", "sassnet", "--input", scan,
                                    "--output", mask, "--probability-output",
                                    os.path.join(served, f"{case_id}_probability.nii.gz"),
                                    "--sdm-output", os.path.join(served, f"{case_id}_sdm.nii.gz"),
                                    # the phantom scan is already z-scored, like the LA release's h5 files
                                    "--normalize", "none"])
        served_seconds = time.time() - t0
    finally:
        server.stop()
    if code:
        raise SystemExit(code)
    return {"run": run_dir, "train_seconds": train_seconds, "state": state, "eval": eval_dir, "models": base,
            "served": served, "served_seconds": served_seconds, "case": case_id}


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sassnet_tf.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="outputs/demo", help="folder for everything the demo writes")
    p.add_argument("--config", default=None, help="default: configs/phantom_demo.yaml")
    p.add_argument("--iterations", type=int, help="train.iterations (default: the config's)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sassnet_tf.config import ConfigError, resolve_config_path, shipped_config
    from sassnet_tf.data.errors import DataError
    from sassnet_tf.training.run_dir import RunDirError

    overrides = {"train.iterations": str(args.iterations)} if args.iterations else {}
    try:
        config_path = resolve_config_path(args.config) if args.config else shipped_config("phantom_demo.yaml")
        result = run(args.output, config_path, overrides, progress=not args.no_progress)
    except (ConfigError, DataError, RunDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best = (result["state"] or {}).get("best") or {}
    print("\n=== done ===")
    print(f"training run      {result['run']}  ({result['train_seconds']:.0f} s; best validation Dice "
          f"{best.get('dice', float('nan')):.3f})  ->  tensorboard --logdir {result['run']}/logs")
    summary_md = os.path.join(result["eval"], "summary.md")
    print(f"evaluation        {result['eval']}  (summary.md, per-case CSV, NIfTI predictions, PNG overlays)")
    if os.path.isfile(summary_md):
        print(open(summary_md, encoding="utf-8").read())
    print(f"SavedModel        {result['models']}  (serve with: sassnet-serve --model-base-path {result['models']})")
    print(f"served segmentation {result['served']}  (case {result['case']} through gRPC in "
          f"{result['served_seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
