"""Segmentation metrics with the definitions of ``medpy.metric.binary`` (what produced the paper's Table 1).

Definitions (``pred`` = result, ``gt`` = reference; any non-zero voxel is foreground):

- ``dice`` = 2 |P & G| / (|P| + |G|); ``jaccard`` = |P & G| / |P | G|.
- Surface of a mask = mask XOR its binary erosion by the connectivity-1 structure (6-neighbourhood in 3-D), the
  outside of the array counting as background. The directed surface distances P -> G are, for each surface voxel
  of P, the Euclidean distance (scaled by ``spacing``) to the nearest surface voxel of G (an exact EDT).
- ``hd95`` = 95th percentile (numpy's linear interpolation) of the directed distances P -> G and G -> P pooled
  together -- medpy's definition; note that MONAI instead takes the larger of the two directed 95th percentiles.
- ``asd`` = mean of the directed distances P -> G only. This is medpy's ``asd`` (the reference calls
  ``metric.binary.asd(pred, gt)``), which is *not* symmetric; ``assd`` is the symmetric version: the mean of both
  directed distance sets pooled together (medpy 0.5's ``assd``; medpy <= 0.4 averaged the two directed means).
- Without ``spacing`` every distance is in voxels (the paper's convention).

Empty masks (medpy raises there; we return values instead and state the rule):

- both empty: ``dice`` = ``jaccard`` = 1.0 (perfect agreement; medpy's ``dc`` would say 0.0), distances NaN;
- exactly one empty: ``dice`` = ``jaccard`` = 0.0, ``hd95`` / ``asd`` / ``assd`` NaN (undefined).

``summarize`` reduces per-case rows: Dice and Jaccard over all cases (an empty prediction scores 0 and stays in
the mean, like a failed case in the paper), the distances over the cases where they are defined, with the number
of undefined cases reported next to them (``n_undefined``); std is the population std (ddof=0).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage

METRICS = ("dice", "jaccard", "hd95", "asd")


def _binary_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred = np.atleast_1d(np.asarray(pred)).astype(bool)
    gt = np.atleast_1d(np.asarray(gt)).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"metrics: prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    return pred, gt


def _spacing(spacing, ndim: int) -> Optional[np.ndarray]:
    if spacing is None:
        return None
    values = np.asarray(spacing, dtype=np.float64).ravel()
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"metrics: spacing must be one or {ndim} positive numbers, got {spacing!r}")
    return values


def dice(pred, gt) -> float:
    """Dice coefficient 2|P&G| / (|P|+|G|) in [0, 1]; 1.0 when both masks are empty.

    Args:
        pred: predicted mask (non-zero = foreground).
        gt: ground-truth mask of the same shape.
    """
    pred, gt = _binary_pair(pred, gt)
    total = np.count_nonzero(pred) + np.count_nonzero(gt)
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(pred & gt) / total)


def jaccard(pred, gt) -> float:
    """Jaccard index |P&G| / |P|G| in [0, 1]; 1.0 when both masks are empty.

    Args:
        pred: predicted mask (non-zero = foreground).
        gt: ground-truth mask of the same shape.
    """
    pred, gt = _binary_pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def surface(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Surface voxels of a boolean mask: the mask minus its erosion (the array's outside is background).

    Args:
        mask: boolean array.
        connectivity: of the erosion's structuring element (1 = face neighbours, medpy's default).
    """
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, iterations=1)


def directed_surface_distances(pred, gt, spacing=None, connectivity: int = 1) -> np.ndarray:
    """Distance from every surface voxel of ``pred`` to the nearest surface voxel of ``gt``.

    Both masks are cropped to the bounding box of their union (plus one voxel) first: exact, since every surface
    voxel lies inside it, and much faster than an EDT over the whole volume.

    Args:
        pred: mask whose surface voxels are measured.
        gt: mask whose surface is the target.
        spacing: voxel size per axis (or one number); None = voxels.
        connectivity: of the erosion that defines the surfaces.

    Returns:
        float64 array, one distance per surface voxel of ``pred`` (in C order); empty if ``pred`` is empty.

    Raises:
        ValueError: if ``gt`` is empty while ``pred`` is not (no target surface).
    """
    pred, gt = _binary_pair(pred, gt)
    sampling = _spacing(spacing, pred.ndim)
    if not pred.any():
        return np.zeros(0, dtype=np.float64)
    if not gt.any():
        raise ValueError("metrics: ground-truth mask is empty; surface distances are undefined")
    pred, gt = _crop_to_union(pred, gt)
    pred_surface = surface(pred, connectivity)
    gt_surface = surface(gt, connectivity)
    distance = ndimage.distance_transform_edt(~gt_surface, sampling=sampling)
    return distance[pred_surface].astype(np.float64)


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords = np.nonzero(a | b)
    slices = tuple(slice(max(int(c.min()) - 1, 0), int(c.max()) + 2) for c in coords)
    return a[slices], b[slices]


def _distances_both_ways(pred, gt, spacing, connectivity) -> Optional[tuple[np.ndarray, np.ndarray]]:
    pred, gt = _binary_pair(pred, gt)
    _spacing(spacing, pred.ndim)  # validate even when the answer is NaN
    if not pred.any() or not gt.any():
        return None
    return (
        directed_surface_distances(pred, gt, spacing, connectivity),
        directed_surface_distances(gt, pred, spacing, connectivity),
    )


def hd95(pred, gt, spacing=None, connectivity: int = 1) -> float:
    """95th percentile of the pooled directed surface distances (medpy ``hd95``); NaN if either mask is empty.

    Args:
        pred: predicted mask.
        gt: ground-truth mask of the same shape.
        spacing: voxel size per axis (or one number); None = voxels (the paper).
        connectivity: of the erosion that defines the surfaces (medpy's default 1).
    """
    both = _distances_both_ways(pred, gt, spacing, connectivity)
    if both is None:
        return math.nan
    return float(np.percentile(np.hstack(both), 95))


def asd(pred, gt, spacing=None, connectivity: int = 1) -> float:
    """Mean distance from the prediction's surface to the ground truth's (medpy ``asd``, directed); NaN if empty.

    Args:
        pred: predicted mask.
        gt: ground-truth mask of the same shape.
        spacing: voxel size per axis (or one number); None = voxels (the paper).
        connectivity: of the erosion that defines the surfaces.
    """
    both = _distances_both_ways(pred, gt, spacing, connectivity)
    if both is None:
        return math.nan
    return float(both[0].mean())


def assd(pred, gt, spacing=None, connectivity: int = 1) -> float:
    """Average symmetric surface distance: mean of both directed distance sets pooled (medpy 0.5 ``assd``).

    NaN if either mask is empty.

    Args:
        pred: predicted mask.
        gt: ground-truth mask of the same shape.
        spacing: voxel size per axis (or one number); None = voxels.
        connectivity: of the erosion that defines the surfaces.
    """
    both = _distances_both_ways(pred, gt, spacing, connectivity)
    if both is None:
        return math.nan
    return float(np.hstack(both).mean())


def case_metrics(pred, gt, spacing=None) -> dict:
    """All metrics of one case, surface distances computed once: dice, jaccard, hd95, asd, assd.

    Args:
        pred: predicted mask.
        gt: ground-truth mask of the same shape.
        spacing: voxel size per axis; None = voxels (the paper).
    """
    pred, gt = _binary_pair(pred, gt)
    row = {"dice": dice(pred, gt), "jaccard": jaccard(pred, gt)}
    both = _distances_both_ways(pred, gt, spacing, 1)
    if both is None:
        row.update(hd95=math.nan, asd=math.nan, assd=math.nan)
    else:
        row.update(
            hd95=float(np.percentile(np.hstack(both), 95)),
            asd=float(both[0].mean()),
            assd=float(np.hstack(both).mean()),
        )
    return row


def summarize(rows: Iterable[Mapping[str, float]], metrics: Sequence[str] = METRICS) -> dict:
    """Mean and std of per-case metrics, with the empty-case rule of this module.

    Dice / Jaccard: a NaN (should not happen with these functions) counts as 0, so every case stays in the mean.
    Distances: mean / std over the cases where they are defined; ``n_undefined`` counts the others (an empty
    prediction or an empty ground truth).

    Args:
        rows: one mapping per case with (at least) the keys in ``metrics``.
        metrics: names to summarise.

    Returns:
        ``{metric: {"mean", "std", "n", "n_undefined"}}`` plus ``"cases"``: the number of rows. Means of a metric
        with no defined value are NaN.
    """
    rows = list(rows)
    out: dict = {"cases": len(rows)}
    for name in metrics:
        try:
            values = np.array([float(row[name]) for row in rows], dtype=np.float64)
        except KeyError:
            raise ValueError(f"summarize: a row lacks the metric {name!r}; rows have keys {sorted(rows[0])}") from None
        if name in ("dice", "jaccard"):
            values = np.nan_to_num(values, nan=0.0)
        defined = values[np.isfinite(values)]
        out[name] = {
            "mean": float(defined.mean()) if defined.size else math.nan,
            "std": float(defined.std()) if defined.size else math.nan,
            "n": int(defined.size),
            "n_undefined": int(values.size - defined.size),
        }
    return out


def paper_table_row(summary: Mapping) -> dict:
    """The paper's Table 1 columns from a ``summarize`` result: Dice %, Jaccard %, ASD, 95HD (means).

    Args:
        summary: output of ``summarize``.
    """
    return {
        "Dice (%)": 100.0 * summary["dice"]["mean"],
        "Jaccard (%)": 100.0 * summary["jaccard"]["mean"],
        "ASD (voxel)": summary["asd"]["mean"],
        "95HD (voxel)": summary["hd95"]["mean"],
    }
