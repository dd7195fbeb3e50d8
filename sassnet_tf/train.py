"""`python train.py --labeled 16`: train SASSNet (or a baseline) into a run folder. See `--help`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Optional

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__,
        epilog="Any config key can be overridden as section.key=value, e.g. train.base_lr=0.02 data.labeled_bs=4 "
               "(see configs/README.md for every key).")
    p.add_argument("--labeled", type=int, help="number of labeled cases: the first N of the train list (data.labeled)")
    p.add_argument("--data-root", help="LA (UA-MT h5) or NIfTI (MSD / nnU-Net) dataset root; omitted: built-in "
                                       "phantom data")
    p.add_argument("--config", help="YAML config: a path, or the name of a shipped one (la_8labeled_half.yaml ...); "
                                    "default: the shipped la_<N>labeled.yaml with data, N = 8 or 16 by --labeled, "
                                    "phantom_demo.yaml without (configs/README.md)")
    p.add_argument("--output", help="run folder (default: runs/<config>-<time>)")
    p.add_argument("--iterations", type=int, help="train.iterations")
    p.add_argument("--precision", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"))
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--mode", choices=("supervised", "sdm", "sassnet"), help="train.mode")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, help="CPU threads for TensorFlow's ops (default: all cores); 1 lets two "
                   "runs share a 2-core machine efficiently")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable); bare KEY=VALUE arguments work too")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sassnet_tf.config import ConfigError, default_config, load_config, parse_overrides, resolve_config_path
    from sassnet_tf.data.errors import DataError
    from sassnet_tf.training.checkpoint_store import CheckpointStoreError
    from sassnet_tf.training.errors import TrainingDiverged, TrainingInterrupted
    from sassnet_tf.training.run_dir import RunDir, RunDirError
    from sassnet_tf.utils.runtime import set_cpu_threads

    try:
        overrides = parse_overrides(args.sets + args.overrides)
        flags = {"data.root": args.data_root, "data.labeled": args.labeled, "train.iterations": args.iterations,
                 "train.precision": args.precision, "train.seed": args.seed, "train.mode": args.mode}
        overrides.update({k: v for k, v in flags.items() if v is not None})
        why = "--config"
        if args.resume and args.config is None and args.output and RunDir(args.output).exists():
            config_path, why = RunDir(args.output).config_path, "the run's own"  # resume with the run's config
        elif args.config:
            config_path = resolve_config_path(args.config)
        else:
            config_path, why = default_config(args.data_root, args.labeled)
        config = load_config(config_path, overrides)
        output = args.output
        if output is None:
            if args.resume:
                raise ConfigError("--resume needs --output RUN_DIR")
            name = os.path.splitext(os.path.basename(config_path))[0]
            output = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if args.threads is not None:
            try:
                set_cpu_threads(args.threads)
            except ValueError as exc:
                raise ConfigError(f"--threads: {exc}") from None
        from sassnet_tf.training.trainer import Trainer

        logging.getLogger("sassnet_tf").info("config %s (%s); output %s", config_path, why, output)
        state = Trainer(config, output, resume=args.resume, progress=not args.no_progress).fit()
    except (ConfigError, DataError, RunDirError, CheckpointStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except TrainingInterrupted as exc:  # SIGINT / SIGTERM during training: checkpointed, resumable
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing was trained
        print("interrupted before the first iteration (Ctrl-C)", file=sys.stderr)
        return 130
    best = state.get("best") or {}
    print(f"done: {output} (iteration {state.get('iteration')}, status {state.get('status')}"
          + (f", best validation Dice {best['dice']:.4f} at {best['iteration']}" if best else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
