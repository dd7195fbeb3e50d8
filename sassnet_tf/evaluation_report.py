"""The evaluation's reports: per-case CSV, summary.json / summary.md in the paper's Table 1 layout, predictions as
NIfTI and overlay PNGs (`sassnet_tf.evaluate` computes, this module writes)."""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

PAPER_COLUMNS = ("Dice (%)", "Jaccard (%)", "ASD (voxel)", "95HD (voxel)")
# SASSNet's own rows of the paper's Table 1 (LA test set), in PAPER_COLUMNS order, shown for comparison.
PAPER_ROWS = {
    "SASSNet paper, 16 labeled": (89.27, 80.82, 3.13, 8.83),
    "SASSNet paper, 16 labeled + NMS": (89.54, 81.24, 2.20, 8.24),
    "SASSNet paper, 8 labeled": (86.81, 76.92, 3.94, 12.54),
    "SASSNet paper, 8 labeled + NMS": (87.32, 77.72, 2.55, 9.62),
}


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


def write_per_case_csv(path: str, rows: list) -> None:
    from sassnet_tf.utils.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "dice", "jaccard", "hd95", "asd", "seconds"])
    for row in rows:
        writer.writerow([row["case"]] + [f"{row[k]:.6f}" for k in ("dice", "jaccard", "hd95", "asd", "seconds")])
    atomic_write_text(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------------- running


def write_case_outputs(output: str, case_id: str, case, prediction: np.ndarray, row: dict, no_png: bool) -> None:
    from sassnet_tf.data.io import write_nifti

    safe = case_id.replace(os.sep, "_")
    write_nifti(os.path.join(output, "predictions", f"{safe}.nii.gz"), prediction.astype(np.uint8), case.affine)
    if not no_png:
        save_overlay_png(
            os.path.join(output, "png", f"{safe}.png"), np.asarray(case.image), np.asarray(case.label), prediction,
            f"{case_id}: Dice {row['dice']:.3f}",
        )


def json_safe(obj):
    """NaN -> None so summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
