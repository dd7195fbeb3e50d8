"""`export.py` / `sassnet-export`: export a training run's V-Net as a TensorFlow Serving model version.

    python export.py --run runs/la16 --output models/sassnet             # version = newest + 1
    python export.py --run runs/la16 --output models/sassnet --version 3 --stride 18 18 4 --gaussian

Settings default to the run's config: patch from ``data.patch_size``, stride / threshold / gaussian / batch size from
``eval``, preprocessing ``{"normalize": "zscore", "downsample": data.downsample}``, dtype policy from
``train.precision`` (a mixed_bfloat16 run exports bf16 kernels: ~2.5x faster on CPUs with AMX, but ~10-15x slower
than float32 on CPUs without native bf16; pass ``--precision float32`` for such servers).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

log = logging.getLogger("sassnet_tf")

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sassnet-export",
        description="Export a training run's V-Net as a TensorFlow Serving SavedModel version (MODELS/NAME/<N>/).",
    )
    parser.add_argument("--run", required=True, help="training run folder (config.yaml + weights/)")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="which V-Net weights (best falls back to last when the run never validated)")
    parser.add_argument("--output", required=True, help="model base path, e.g. models/sassnet (created if missing)")
    parser.add_argument("--version", type=int, help="version number (default: newest existing + 1); never overwritten")
    parser.add_argument("--stride", type=int, nargs=3, metavar=("X", "Y", "Z"), help="default: the run's eval.stride")
    parser.add_argument("--threshold", type=float, help="label = probability > threshold (default: eval.threshold)")
    parser.add_argument("--gaussian", action=argparse.BooleanOptionalAction, default=None,
                        help="Gaussian importance weighting of windows (default: eval.gaussian)")
    parser.add_argument("--batch-size", type=int, help="windows per forward pass (default: eval.batch_size)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="dtype policy of the exported network (default: the run's train.precision)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip assets.extra/tf_serving_warmup_requests (the server then warms up on first use)")
    return parser


def warn_if_slow_bf16(policy: str) -> None:
    """Warn when exporting bf16 kernels from a CPU where they run slower than float32 (no native bf16, or an Intel
    CPU with AVX512-BF16 but no AMX): serving machines like it would be better off with float32.

    Args:
        policy: the exported network's dtype policy name.
    """
    from sassnet_tf.training.precision import cpu_has_fast_bf16, cpu_has_native_bf16

    log.info("exporting with dtype policy %s", policy)
    if policy == "mixed_bfloat16" and not cpu_has_fast_bf16():
        if cpu_has_native_bf16():
            why = ("this CPU runs bf16 slower than float32 (an Intel CPU with AVX512-BF16 but no AMX: 0.48 vs 0.25 s "
                   "per 112x112x80 window, measured)")
        else:
            why = ("this CPU has no native bf16 (AVX512-BF16 / AMX): a mixed_bfloat16 model served on CPUs like it "
                   "runs ~10-15x slower than float32 (measured on an AVX2 EPYC)")
        log.warning("%s. Export with --precision float32 unless the serving machines have AMX or are AMD CPUs with "
                    "AVX512-BF16", why)


def run_export(args: argparse.Namespace) -> str:
    """Check the request, load the run named by `args`, export it and return the version folder.

    Everything that can be checked without the network (run folder, config, settings, output, version) is checked
    before TensorFlow loads, so a mistyped flag fails in a second.

    Args:
        args: parsed command-line arguments (see `build_parser`).
    """
    from sassnet_tf.export.errors import ExportError
    from sassnet_tf.export.settings import check_export_settings
    from sassnet_tf.export.versions import prepare_base_path, resolve_version
    from sassnet_tf.training.run_dir import RunDir

    if not os.path.isdir(args.run):
        raise ExportError(f"--run {args.run}: run folder not found")
    config = RunDir(args.run).read_config()
    e = config.eval
    settings = check_export_settings(
        patch_size=tuple(config.data.patch_size),
        stride=tuple(args.stride) if args.stride else tuple(e.stride),
        threshold=args.threshold if args.threshold is not None else e.threshold,
        gaussian=args.gaussian if args.gaussian is not None else e.gaussian,
        batch_size=args.batch_size if args.batch_size is not None else e.batch_size,
        preprocessing={"normalize": "zscore", "downsample": config.data.downsample},
    )
    resolve_version(prepare_base_path(args.output), args.version)

    from sassnet_tf.export.saved_model import export_saved_model
    from sassnet_tf.training.run_dir import load_vnet

    vnet, config = load_vnet(args.run, weights=args.weights, precision=args.precision)
    warn_if_slow_bf16(vnet.dtype_policy.name)
    return export_saved_model(vnet, args.output, args.version, config=config, warmup=not args.no_warmup, **settings)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code (0 ok, 2 bad input or unusable paths).

    Args:
        argv: arguments (default: sys.argv[1:]).
    """
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = run_export(args)
    except (ValueError, OSError) as exc:  # ExportError, RunDirError, ConfigError are ValueErrors
        log.debug("export failed", exc_info=True)
        print(f"sassnet-export: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {path} (version {os.path.basename(path)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
