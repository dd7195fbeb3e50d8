"""Evaluate a trained model on a list of cases with the paper's protocol (``python -m sassnet_tf.evaluate``).

The model is either a training run folder (``RUN/config.yaml`` + ``RUN/weights/vnet_<best|last>.weights.h5``) or
an exported SavedModel (a folder holding ``saved_model.pb``, or a model base path whose newest numbered version is
used); both are loaded as a `sassnet_tf.inference.Predictor` and go through the same sliding-window code with the
same settings, so their numbers agree. The files are written by `sassnet_tf.evaluation_report`.

Per case: sliding-window inference (patch from the model, stride 18/18/4 by default), optional largest connected
component ("NMS"), then Dice, Jaccard, 95HD and ASD (medpy definitions, in voxels) against the full-resolution
label. With ``data.downsample > 1`` the network sees the downsampled image and its probability map is upsampled
(trilinear) back to the full-resolution grid before thresholding, so the metrics always use the original label.

Outputs in ``--output`` (default ``RUN/eval-<list>``): ``per_case.csv`` (case, dice, jaccard, hd95, asd, seconds =
downsampling + inference + upsampling + NMS, without reading and metrics), ``summary.json``, ``summary.md`` (the
paper's Table 1 columns), ``predictions/<case>.nii.gz`` (uint8, with each case's affine) and ``png/<case>.png``.
``--nms-output DIR`` also writes the same files for the largest-component prediction of the same inference into DIR,
so one sliding-window pass scores a list both ways (its ``seconds`` include the NMS; half the time of two runs).
Exit codes: 0 success, 2 bad input (missing case, bad shapes, bad settings, unwritable output), with one message.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from typing import Optional, Sequence

from sassnet_tf.utils.runtime import set_cpu_threads

log = logging.getLogger("sassnet_tf.evaluate")

class EvaluationError(ValueError):
    """Bad evaluation input; the message names the file, case or option and what was expected."""


def load_model(path: str, weights: str = "best", precision: Optional[str] = None):
    """A `Predictor` for --model (a run folder or a SavedModel), with errors as EvaluationError.

    Args:
        path: --model.
        weights: for a run folder: "best" or "last".
        precision: for a run folder: dtype policy override (ignored, with a warning, for a SavedModel).
    """
    from sassnet_tf.inference.predictor import ModelLoadError, Predictor, find_saved_model

    if precision and os.path.exists(path) and find_saved_model(path) is not None:
        log.warning("--precision is ignored for a SavedModel (its graph has fixed dtypes)")
    try:
        return Predictor.from_path(path, weights=weights, precision=precision)
    except ModelLoadError as exc:
        raise EvaluationError(f"--model {exc}") from None


def check_output_dir(path: str) -> str:
    """Create `path` if needed and prove it is writable; raise OSError naming it otherwise.

    Args:
        path: the output folder.
    """
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OSError(f"--output {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def evaluate(args: argparse.Namespace) -> dict:
    """Run the evaluation described by parsed command-line `args`; return the summary dict."""
    from sassnet_tf.evaluation_report import write_case_outputs
    from sassnet_tf.inference.postprocess import largest_connected_component
    from sassnet_tf.inference.settings import InferenceSettingsError
    from sassnet_tf.metrics import case_metrics

    predictor = load_model(args.model, weights=args.weights, precision=args.precision)
    try:
        predictor = predictor.with_settings(stride=tuple(args.stride) if args.stride else None,
                                            batch_size=args.batch_size, gaussian=args.gaussian)
    except InferenceSettingsError as exc:
        raise EvaluationError(f"--stride / --batch-size: {exc}") from None
    config = predictor.config
    if args.nms is not None:
        nms = args.nms
    else:  # with --nms-output, --output is the result without NMS whatever the run's eval.nms says
        nms = bool(config.eval.nms) if config is not None and not args.nms_output else False

    root = args.data_root or (config.data.root if config else None)
    data_format = args.format or (config.data.format if config else "auto")
    if not root:
        if config is None:
            raise EvaluationError("--data-root: required when --model is a SavedModel")
        # The run trained on the built-in phantom data: evaluate on the same (cached) dataset.
        from sassnet_tf.training.trainer import resolve_data_root

        root, data_format = resolve_data_root(config)
    list_name = args.list or (config.data.test_list if config else "test.list")
    list_stem = os.path.splitext(os.path.basename(list_name))[0]
    output = args.output
    if output is None:
        if config is None:
            raise EvaluationError("--output: required when --model is a SavedModel")
        output = os.path.join(args.model, f"eval-{list_stem}")
    output = check_output_dir(output)
    # (folder, NMS on?) of each result written; --nms-output adds the largest component of the same inference.
    outputs = [(output, nms)]
    if args.nms_output:
        if nms:
            raise EvaluationError("--nms-output: --output is the result without NMS, so --nms cannot be given with "
                                  "it")
        nms_output = check_output_dir(args.nms_output)
        if nms_output == output:
            raise EvaluationError(f"--nms-output {nms_output}: must differ from --output")
        outputs.append((nms_output, True))

    from sassnet_tf.data.dataset_layout import open_dataset

    layout = open_dataset(root, format=data_format, downsample=1)  # full resolution; the Predictor downsamples
    case_ids = list(layout.read_list(list_name))
    missing = [c for c in case_ids if not os.path.isfile(layout.case_path(c))]
    if missing:  # fail before any inference, naming every missing case
        raise EvaluationError(
            f"{layout.list_path(list_name)}: {len(missing)} listed case(s) not found under {root}: "
            + ", ".join(f"{c!r} (expected {layout.case_path(c)})" for c in missing[:5])
            + (" ..." if len(missing) > 5 else "")
        )
    predictor.segment_fn()  # load and trace once up front so the first case's time is inference only

    rows = {folder: [] for folder, _ in outputs}
    started = time.time()
    for index, case_id in enumerate(case_ids, 1):
        full = layout.load(case_id)
        if full.label is None:
            raise EvaluationError(f"case {case_id!r} under {root}: no label; evaluation needs the ground truth")
        if tuple(full.image.shape) != tuple(full.label.shape):
            raise EvaluationError(
                f"case {case_id!r} under {root}: image shape {tuple(full.image.shape)} != label shape "
                f"{tuple(full.label.shape)}"
            )
        tick = time.perf_counter()
        raw = predictor.predict(full.image)["label"]
        seconds = time.perf_counter() - tick
        for folder, keep_largest in outputs:
            tick = time.perf_counter()
            prediction = largest_connected_component(raw) if keep_largest else raw
            elapsed = seconds + time.perf_counter() - tick  # inference (+ NMS), not the metrics
            row = {"case": case_id, **case_metrics(prediction, full.label), "seconds": elapsed}
            rows[folder].append(row)
            print(
                f"[{index}/{len(case_ids)}] {case_id}{' (NMS)' if keep_largest and len(outputs) > 1 else ''}: "
                f"dice {row['dice']:.4f} jaccard {row['jaccard']:.4f} "
                f"hd95 {row['hd95']:.2f} asd {row['asd']:.2f} ({row['seconds']:.1f} s)",
                flush=True,
            )
            write_case_outputs(folder, case_id, full, prediction, row, args.no_png)

    seconds_total = time.time() - started
    summaries = [_write_summary(folder, rows[folder], keep_largest, list_name, root, predictor, seconds_total)
                 for folder, keep_largest in outputs]
    return summaries[0]


def _write_summary(output: str, rows: list, nms: bool, list_name: str, root: str, predictor,
                   seconds_total: float) -> dict:
    """Write per_case.csv, summary.json and summary.md of one result folder; return the summary."""
    from sassnet_tf.evaluation_report import json_safe, summary_markdown, write_per_case_csv
    from sassnet_tf.metrics import paper_table_row, summarize
    from sassnet_tf.utils.atomic import atomic_write_text

    settings = predictor.settings
    stats = summarize(rows)
    summary = {
        "list": list_name,
        "data_root": os.path.abspath(root),
        "model": predictor.description,
        "settings": {
            "patch_size": list(settings.patch_size),
            "stride": list(settings.stride),
            "batch_size": settings.batch_size,
            "gaussian": settings.gaussian,
            "threshold": settings.threshold,
            "nms": nms,
            "downsample": settings.downsample,
            "metric_units": "voxels",
        },
        "metrics": stats,
        "paper_table": paper_table_row(stats),
        "cases": [{k: v for k, v in r.items() if k != "assd"} for r in rows],
        "seconds_total": seconds_total,
    }
    write_per_case_csv(os.path.join(output, "per_case.csv"), rows)
    atomic_write_text(os.path.join(output, "summary.json"), json.dumps(json_safe(summary), indent=2) + "\n")
    atomic_write_text(os.path.join(output, "summary.md"), summary_markdown(summary))
    table = summary["paper_table"]
    print(
        f"mean over {len(rows)} cases{' (NMS)' if nms else ''}: Dice {table['Dice (%)']:.2f} %, "
        f"Jaccard {table['Jaccard (%)']:.2f} %, ASD {table['ASD (voxel)']:.2f}, 95HD {table['95HD (voxel)']:.2f} "
        f"-> {output}",
        flush=True,
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sassnet-evaluate",
        description="Sliding-window evaluation with the paper's protocol (Dice, Jaccard, 95HD, ASD in voxels).",
    )
    parser.add_argument("--model", required=True, help="training run folder, SavedModel folder or model base path")
    parser.add_argument("--data-root", help="dataset root (LA or NIfTI layout); default: the run's data.root")
    parser.add_argument("--format", choices=("auto", "la", "nifti"), help="dataset layout; default: the run's")
    parser.add_argument("--list", help="list file of case IDs, relative to the root (default: the run's test list)")
    parser.add_argument("--nms", action=argparse.BooleanOptionalAction, default=None,
                        help="keep the largest connected component (default: the run's eval.nms; off for a SavedModel)")
    parser.add_argument("--nms-output", metavar="DIR",
                        help="also write the largest-component result of the same inference into DIR (one pass "
                             "for both; --output is then the result without NMS)")
    parser.add_argument("--stride", type=int, nargs=3, metavar=("X", "Y", "Z"), help="default: the model's (18 18 4)")
    parser.add_argument(
        "--gaussian", action=argparse.BooleanOptionalAction, default=None,
        help="Gaussian importance weighting of windows (default: the model's eval.gaussian)",
    )
    parser.add_argument("--batch-size", type=int, help="windows per forward pass (default: the run's eval.batch_size)")
    parser.add_argument(
        "--precision", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"),
        help="dtype policy for a run folder (default: the run's train.precision)",
    )
    parser.add_argument("--weights", choices=("best", "last"), default="best", help="run folder weights")
    parser.add_argument("--output", help="results folder (default RUN/eval-<list>; required for a SavedModel)")
    parser.add_argument("--no-png", action="store_true", help="skip the per-case overlay PNGs")
    parser.add_argument("--threads", type=int, help="CPU threads for TensorFlow's ops (default: all cores)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.threads is not None:
            try:
                set_cpu_threads(args.threads)
            except ValueError as exc:
                raise EvaluationError(f"--threads: {exc}") from None
        evaluate(args)
    except (ValueError, OSError) as exc:  # DataError, ConfigError, RunDirError, EvaluationError are ValueErrors
        log.debug("evaluation failed", exc_info=True)
        print(f"sassnet-evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
