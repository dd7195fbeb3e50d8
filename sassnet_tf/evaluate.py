"""Evaluate a trained model on a list of cases with the paper's protocol (``python -m sassnet_tf.evaluate``).

The model is either a training run folder (``RUN/config.yaml`` + ``RUN/weights/vnet_<best|last>.weights.h5``) or
an exported SavedModel (a folder holding ``saved_model.pb``, or a model base path whose newest numbered version is
used); both go through the same sliding-window code with the same settings, so their numbers agree.

Per case: sliding-window inference (patch from the model, stride 18/18/4 by default), optional largest connected
component ("NMS"), then Dice, Jaccard, 95HD and ASD (medpy definitions, in voxels) against the full-resolution
label. With ``data.downsample > 1`` the network sees the downsampled image and its probability map is upsampled
(trilinear) back to the full-resolution grid before thresholding, so the metrics always use the original label.

Outputs in ``--output`` (default ``RUN/eval-<list>``): ``per_case.csv`` (case, dice, jaccard, hd95, asd, seconds =
downsampling + inference + upsampling + NMS, without reading and metrics), ``summary.json``, ``summary.md`` (the paper's Table 1
columns), ``predictions/<case>.nii.gz`` (uint8, with each case's affine) and ``png/<case>.png``.
Exit codes: 0 success, 2 bad input (missing case, bad shapes, bad settings, unwritable output), with one message.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
from typing import Optional, Sequence

import numpy as np

from sassnet_tf.utils.runtime import set_cpu_threads

log = logging.getLogger("sassnet_tf.evaluate")

PAPER_COLUMNS = ("Dice (%)", "Jaccard (%)", "ASD (voxel)", "95HD (voxel)")
# SASSNet's own rows of the paper's Table 1 (LA test set), in PAPER_COLUMNS order, shown for comparison.
PAPER_ROWS = {
    "SASSNet paper, 16 labeled": (89.27, 80.82, 3.13, 8.83),
    "SASSNet paper, 16 labeled + NMS": (89.54, 81.24, 2.20, 8.24),
    "SASSNet paper, 8 labeled": (86.81, 76.92, 3.94, 12.54),
    "SASSNet paper, 8 labeled + NMS": (87.32, 77.72, 2.55, 9.62),
}


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


# --------------------------------------------------------------------------------------------------- outputs


def save_overlay_png(path: str, image: np.ndarray, label: np.ndarray, prediction: np.ndarray, title: str) -> None:
    """Axial, coronal and sagittal slices through the ground truth's centroid; GT contour green, prediction red.

    Args:
        path: the PNG file (written atomically).
        image, label, prediction: ``[H, W, D]`` arrays of one shape.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sassnet_tf.utils.atomic import atomic_path

    coords = np.argwhere(label > 0)
    centre = coords.mean(axis=0).round().astype(int) if coords.size else np.array(label.shape) // 2
    views = [
        ("axial z=%d" % centre[2], np.s_[:, :, centre[2]]),
        ("coronal y=%d" % centre[1], np.s_[:, centre[1], :]),
        ("sagittal x=%d" % centre[0], np.s_[centre[0], :, :]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (name, where) in zip(axes, views):
        # Transpose so the first array axis runs horizontally; origin lower keeps the anatomy upright.
        ax.imshow(image[where].T, cmap="gray", origin="lower", interpolation="nearest")
        for mask, colour in ((label, "lime"), (prediction, "red")):
            plane = (mask[where] > 0).T.astype(np.float32)
            if plane.any() and not plane.all():
                ax.contour(plane, levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(f"{title}   (green: ground truth, red: prediction)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _format_mean_std(stats: dict, scale: float = 1.0) -> str:
    if stats["n"] == 0:
        return "n/a"
    text = f"{scale * stats['mean']:.2f} ± {scale * stats['std']:.2f}"
    if stats["n_undefined"]:
        text += f" (n={stats['n']})"
    return text


def summary_markdown(summary: dict) -> str:
    """The paper's Table 1 columns for one model: mean ± std over the cases, then the plain means.

    Args:
        summary: the dict written to summary.json.
    """
    s = summary["metrics"]
    settings = summary["settings"]
    lines = [
        f"# Evaluation: {summary['list']} ({s['cases']} cases)",
        "",
        f"Model: `{summary['model']['path']}` ({summary['model']['kind']})",
        f"Sliding window: patch {settings['patch_size']}, stride {settings['stride']}, "
        f"gaussian {settings['gaussian']}, threshold {settings['threshold']}, NMS {settings['nms']}, "
        f"downsample {settings['downsample']}",
        "",
        "| " + " | ".join(("Metric (mean ± std)",) + PAPER_COLUMNS) + " |",
        "|---|---|---|---|---|",
        "| this model | "
        + " | ".join(
            [
                _format_mean_std(s["dice"], 100.0),
                _format_mean_std(s["jaccard"], 100.0),
                _format_mean_std(s["asd"]),
                _format_mean_std(s["hd95"]),
            ]
        )
        + " |",
        *(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |" for name, values in PAPER_ROWS.items()),
        "",
        "Paper-compatible means (Table 1 layout): "
        + ", ".join(f"{k} {v:.2f}" for k, v in summary["paper_table"].items() if not math.isnan(v)),
        "",
        "Distances are in voxels (medpy, no spacing); ASD is medpy's directed `asd(prediction, ground truth)`. "
        "An empty prediction scores Dice 0 and stays in the Dice/Jaccard means; its 95HD/ASD are undefined and "
        "left out of those means (n shown when that happens).",
        "",
    ]
    return "\n".join(lines)


def _write_csv(path: str, rows: list) -> None:
    from sassnet_tf.utils.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "dice", "jaccard", "hd95", "asd", "seconds"])
    for row in rows:
        writer.writerow([row["case"]] + [f"{row[k]:.6f}" for k in ("dice", "jaccard", "hd95", "asd", "seconds")])
    atomic_write_text(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------------- running


def evaluate(args: argparse.Namespace) -> dict:
    """Run the evaluation described by parsed command-line `args`; return the summary dict."""
    from sassnet_tf.inference.postprocess import largest_connected_component
    from sassnet_tf.inference.settings import InferenceSettingsError
    from sassnet_tf.metrics import case_metrics, paper_table_row, summarize
    from sassnet_tf.utils.atomic import atomic_write_text

    predictor = load_model(args.model, weights=args.weights, precision=args.precision)
    try:
        predictor = predictor.with_settings(stride=tuple(args.stride) if args.stride else None,
                                            batch_size=args.batch_size, gaussian=args.gaussian)
    except InferenceSettingsError as exc:
        raise EvaluationError(f"--stride / --batch-size: {exc}") from None
    settings, config = predictor.settings, predictor.config
    nms = args.nms if args.nms is not None else bool(config.eval.nms) if config is not None else False

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

    rows = []
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
        prediction = predictor.predict(full.image)["label"]
        if nms:
            prediction = largest_connected_component(prediction)
        seconds = time.perf_counter() - tick
        row = {"case": case_id, **case_metrics(prediction, full.label), "seconds": seconds}
        rows.append(row)
        print(
            f"[{index}/{len(case_ids)}] {case_id}: dice {row['dice']:.4f} jaccard {row['jaccard']:.4f} "
            f"hd95 {row['hd95']:.2f} asd {row['asd']:.2f} ({seconds:.1f} s)",
            flush=True,
        )
        _write_case_outputs(output, case_id, full, prediction, row, args.no_png)

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
        "seconds_total": time.time() - started,
    }
    _write_csv(os.path.join(output, "per_case.csv"), rows)
    atomic_write_text(os.path.join(output, "summary.json"), json.dumps(_json_safe(summary), indent=2) + "\n")
    atomic_write_text(os.path.join(output, "summary.md"), summary_markdown(summary))
    table = summary["paper_table"]
    print(
        f"mean over {len(rows)} cases: Dice {table['Dice (%)']:.2f} %, Jaccard {table['Jaccard (%)']:.2f} %, "
        f"ASD {table['ASD (voxel)']:.2f}, 95HD {table['95HD (voxel)']:.2f} -> {output}",
        flush=True,
    )
    return summary


def _write_case_outputs(output: str, case_id: str, case, prediction: np.ndarray, row: dict, no_png: bool) -> None:
    from sassnet_tf.data.io import write_nifti

    safe = case_id.replace(os.sep, "_")
    write_nifti(os.path.join(output, "predictions", f"{safe}.nii.gz"), prediction.astype(np.uint8), case.affine)
    if not no_png:
        save_overlay_png(
            os.path.join(output, "png", f"{safe}.png"), np.asarray(case.image), np.asarray(case.label), prediction,
            f"{case_id}: Dice {row['dice']:.3f}",
        )


def _json_safe(obj):
    """NaN -> None so summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


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
