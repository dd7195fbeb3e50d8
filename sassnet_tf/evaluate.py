"""Evaluate a trained model on a list of cases with the paper's protocol (``python -m sassnet_tf.evaluate``).

The model is either a training run folder (``RUN/config.yaml`` + ``RUN/weights/vnet_<best|last>.weights.h5``) or
an exported SavedModel (a folder holding ``saved_model.pb``, or a model base path whose newest numbered version is
used); both go through the same sliding-window code with the same settings, so their numbers agree.

Per case: sliding-window inference (patch from the model, stride 18/18/4 by default), optional largest connected
component ("NMS"), then Dice, Jaccard, 95HD and ASD (medpy definitions, in voxels) against the full-resolution
label. With ``data.downsample > 1`` the network sees the downsampled image and its probability map is upsampled
(trilinear) back to the full-resolution grid before thresholding, so the metrics always use the original label.

Outputs in ``--output`` (default ``RUN/eval-<list>``): ``per_case.csv`` (case, dice, jaccard, hd95, asd, seconds =
inference + upsampling + NMS, without reading and metrics), ``summary.json``, ``summary.md`` (the paper's Table 1
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
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

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


@dataclass
class ModelSource:
    """What evaluate needs from a model, whichever way it was stored.

    Args:
        make_predict_fn: builds (or returns) ``predict_fn(patches [N, ph, pw, pd, 1]) -> {"seg" | "probability",
            "sdm"}``; called once, after the cheap checks, so bad input fails before a slow network load.
        patch_size: window size the model was trained with.
        stride, gaussian, threshold, batch_size: sliding-window defaults (the command line may override them).
        downsample: integer factor the model expects its input to be reduced by.
        data_root, data_format, test_list: dataset defaults (a run's config; None for a SavedModel).
        default_output: where results go when --output is not given (None: --output is required).
        description: what was loaded, for the summary.
        config: the run's config (None for a SavedModel); with no data root it names the built-in phantom data.
    """

    make_predict_fn: Callable[[], Callable]
    patch_size: tuple
    stride: tuple
    gaussian: bool
    threshold: float
    batch_size: int
    downsample: int
    data_root: Optional[str]
    data_format: str
    test_list: str
    default_output: Optional[str]
    description: dict
    config: Optional[object] = None


# ----------------------------------------------------------------------------------------------- model loading


def find_saved_model(path: str) -> Optional[str]:
    """The SavedModel folder for `path`: itself if it holds saved_model.pb, else its newest numbered version.

    Args:
        path: a SavedModel folder or a model base path (``MODELS/sassnet`` with ``1/``, ``2/``, ...).

    Returns:
        the folder, or None when `path` is neither.
    """
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        return None
    versions = [
        int(name)
        for name in os.listdir(path)
        if name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb"))
    ]
    if not versions:
        return None
    return os.path.join(path, str(max(versions)))


def load_saved_model(path: str) -> ModelSource:
    """Load an exported SavedModel and read its ``metadata`` signature (DESIGN.md "SavedModel").

    Args:
        path: the SavedModel (version) folder.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    for name in ("segment_patches", "metadata"):
        if name not in loaded.signatures:
            raise EvaluationError(
                f"{path}: SavedModel has no {name!r} signature (has {sorted(loaded.signatures)}); "
                "expected one written by sassnet_tf.export"
            )
    raw = loaded.signatures["metadata"](format=tf.constant("json"))["json"].numpy()
    try:
        meta = json.loads(raw.decode("utf-8"))
        patch = tuple(int(v) for v in meta["patch_size"])
        stride = tuple(int(v) for v in meta.get("stride", (18, 18, 4)))
        downsample = int(meta.get("preprocessing", {}).get("downsample", 1))
        batch_size = int(meta.get("batch_size", 4))
    except (ValueError, KeyError, TypeError) as exc:
        raise EvaluationError(f"{path}: metadata signature returned unusable JSON ({exc}): {raw[:200]!r}") from None
    segment = loaded.signatures["segment_patches"]

    def predict_fn(patches):
        return segment(patches=patches)

    predict_fn.loaded = loaded  # keep the SavedModel's variables alive with the function
    return ModelSource(
        make_predict_fn=lambda: predict_fn,
        patch_size=patch,
        stride=stride,
        gaussian=bool(meta.get("gaussian", False)),
        threshold=float(meta.get("threshold", 0.5)),
        batch_size=batch_size,
        downsample=downsample,
        data_root=None,
        data_format="auto",
        test_list="test.list",
        default_output=None,
        description={"kind": "saved_model", "path": os.path.abspath(path), "metadata": meta},
    )


def load_run_dir(path: str, weights: str, precision: Optional[str]) -> ModelSource:
    """A training run: its config now, its V-Net (`weights` best | last, via ``training.run_dir.load_vnet``) later.

    Args:
        path: the run folder.
        weights: "best" or "last".
        precision: dtype policy (None: the run's own ``train.precision``).
    """
    from sassnet_tf.training.run_dir import RunDir

    config = RunDir(path).read_config()
    description = {"kind": "run_dir", "path": os.path.abspath(path), "weights": weights,
                   "precision": precision or config.train.precision}

    def make_predict_fn():
        from sassnet_tf.inference.sliding_window import keras_predict_fn
        from sassnet_tf.training.run_dir import load_vnet

        vnet, _ = load_vnet(path, weights=weights, precision=precision)
        description["precision"] = vnet.dtype_policy.name  # "auto" resolved
        return keras_predict_fn(vnet)

    return ModelSource(
        make_predict_fn=make_predict_fn,
        patch_size=tuple(config.data.patch_size),
        stride=tuple(config.eval.stride),
        gaussian=bool(config.eval.gaussian),
        threshold=float(config.eval.threshold),
        batch_size=int(config.eval.batch_size),
        downsample=int(config.data.downsample),
        data_root=config.data.root,
        data_format=config.data.format,
        test_list=config.data.test_list,
        default_output=path,
        description=description,
        config=config,
    )


def load_model(path: str, weights: str = "best", precision: Optional[str] = None) -> ModelSource:
    """A run folder or a SavedModel (folder or model base path), recognised by its content.

    Args:
        path: --model.
        weights: for a run folder: "best" or "last".
        precision: for a run folder: dtype policy override.
    """
    if not os.path.exists(path):
        raise EvaluationError(f"--model {path}: not found")
    saved = find_saved_model(path)
    if saved is not None:
        if precision:
            log.warning("--precision is ignored for a SavedModel (its graph has fixed dtypes)")
        return load_saved_model(saved)
    if os.path.isfile(os.path.join(path, "config.yaml")):
        return load_run_dir(path, weights, precision)
    raise EvaluationError(
        f"--model {path}: neither a run folder (config.yaml + weights/) nor a SavedModel "
        "(saved_model.pb, or numbered version folders holding one)"
    )


# ------------------------------------------------------------------------------------------- settings checks


def check_settings(patch: Sequence[int], stride: Sequence[int], batch_size: int, threshold: float) -> None:
    """Reject settings the sliding window cannot honour, naming the option.

    Args:
        patch: window size; each axis a positive multiple of 16 (the V-Net halves it four times).
        stride: 1..patch per axis.
        batch_size: >= 1.
        threshold: in (0, 1).
    """
    if len(patch) != 3 or any(int(p) != p or p <= 0 or p % 16 for p in patch):
        raise EvaluationError(f"patch size {list(patch)}: expected three positive multiples of 16")
    if len(stride) != 3 or any(int(s) != s or s <= 0 for s in stride):
        raise EvaluationError(f"--stride {list(stride)}: expected three positive integers")
    if any(s > p for s, p in zip(stride, patch)):
        raise EvaluationError(
            f"--stride {list(stride)}: larger than the patch {list(patch)} on some axis; windows would leave gaps"
        )
    if batch_size < 1:
        raise EvaluationError(f"--batch-size {batch_size}: expected a positive integer")
    if not 0.0 < threshold < 1.0:
        raise EvaluationError(f"threshold {threshold}: expected a value in (0, 1)")


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


# ------------------------------------------------------------------------------------------------ resampling


def resize_linear(volume: np.ndarray, shape: Sequence[int], factor: Optional[int] = None) -> np.ndarray:
    """Trilinear resize of a 3-D array to `shape`, one separable 1-D linear interpolation per axis.

    With `factor` (the integer downsampling factor of the data), output voxel ``j`` samples input position
    ``j / factor`` -- the inverse of keeping every factor-th voxel (``x[::factor]``); positions past the last input
    voxel take its value. Without it, voxel centres are aligned (half-pixel convention).

    Args:
        volume: the low-resolution array.
        shape: the target shape.
        factor: the downsampling factor that produced `volume`, or None.
    """
    out = np.asarray(volume, dtype=np.float32)
    for axis, target in enumerate(shape):
        n_in = out.shape[axis]
        j = np.arange(target, dtype=np.float64)
        src = j / factor if factor else (j + 0.5) * n_in / target - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        w = (src - lo).astype(np.float32)
        view = [1] * out.ndim
        view[axis] = target
        w = w.reshape(view)
        out = np.take(out, lo, axis=axis) * (1.0 - w) + np.take(out, hi, axis=axis) * w
    return out


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


def _open_layouts(root: str, data_format: str, downsample: int):
    from sassnet_tf.data.dataset_layout import open_dataset

    full = open_dataset(root, format=data_format, downsample=1)
    low = open_dataset(root, format=data_format, downsample=downsample) if downsample > 1 else full
    return full, low


def _segmenter(predict_fn: Callable, patch, stride, batch_size, gaussian, threshold):
    """One tf.function for every volume shape (no retracing)."""
    import tensorflow as tf

    from sassnet_tf.inference.sliding_window import sliding_window_inference

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="image")])
    def segment(image):
        return sliding_window_inference(
            image, predict_fn, patch_size=patch, stride=stride, batch_size=batch_size, gaussian=gaussian,
            threshold=threshold,
        )

    return segment


def evaluate(args: argparse.Namespace) -> dict:
    """Run the evaluation described by parsed command-line `args`; return the summary dict."""
    from sassnet_tf.inference.postprocess import largest_connected_component
    from sassnet_tf.metrics import case_metrics, paper_table_row, summarize
    from sassnet_tf.utils.atomic import atomic_write_text

    source = load_model(args.model, weights=args.weights, precision=args.precision)
    patch = tuple(source.patch_size)
    stride = tuple(args.stride) if args.stride else tuple(source.stride)
    batch_size = args.batch_size if args.batch_size is not None else source.batch_size
    gaussian = source.gaussian if args.gaussian is None else args.gaussian
    threshold = source.threshold
    check_settings(patch, stride, batch_size, threshold)

    root = args.data_root or source.data_root
    data_format = args.format or source.data_format
    if not root:
        if source.config is None:
            raise EvaluationError("--data-root: required when --model is a SavedModel")
        # The run trained on the built-in phantom data: evaluate on the same (cached) dataset.
        from sassnet_tf.training.trainer import resolve_data_root

        root, data_format = resolve_data_root(source.config)
    list_name = args.list or source.test_list
    list_stem = os.path.splitext(os.path.basename(list_name))[0]
    output = args.output
    if output is None:
        if source.default_output is None:
            raise EvaluationError("--output: required when --model is a SavedModel")
        output = os.path.join(source.default_output, f"eval-{list_stem}")
    output = check_output_dir(output)

    full_layout, low_layout = _open_layouts(root, data_format, source.downsample)
    case_ids = list(full_layout.read_list(list_name))
    missing = [c for c in case_ids if not os.path.isfile(full_layout.case_path(c))]
    if missing:  # fail before any inference, naming every missing case
        raise EvaluationError(
            f"{full_layout.list_path(list_name)}: {len(missing)} listed case(s) not found under {root}: "
            + ", ".join(f"{c!r} (expected {full_layout.case_path(c)})" for c in missing[:5])
            + (" ..." if len(missing) > 5 else "")
        )
    segment = _segmenter(source.make_predict_fn(), patch, stride, batch_size, gaussian, threshold)
    segment.get_concrete_function()  # trace once up front so the first case's time is inference only

    rows = []
    started = time.time()
    for index, case_id in enumerate(case_ids, 1):
        full = full_layout.load(case_id)
        if full.label is None:
            raise EvaluationError(f"case {case_id!r} under {root}: no label; evaluation needs the ground truth")
        if tuple(full.image.shape) != tuple(full.label.shape):
            raise EvaluationError(
                f"case {case_id!r} under {root}: image shape {tuple(full.image.shape)} != label shape "
                f"{tuple(full.label.shape)}"
            )
        low = low_layout.load(case_id) if low_layout is not full_layout else full
        tick = time.perf_counter()
        outputs = segment(np.ascontiguousarray(low.image, dtype=np.float32))
        probability = outputs["probability"].numpy()
        if probability.shape != full.label.shape:
            probability = resize_linear(probability, full.label.shape, factor=source.downsample)
            prediction = (probability > threshold).astype(np.uint8)
        else:
            prediction = outputs["label"].numpy()
        if args.nms:
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
        "model": source.description,
        "settings": {
            "patch_size": list(patch),
            "stride": list(stride),
            "batch_size": batch_size,
            "gaussian": gaussian,
            "threshold": threshold,
            "nms": bool(args.nms),
            "downsample": source.downsample,
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
    parser.add_argument("--nms", action="store_true", help="keep the largest connected component")
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
