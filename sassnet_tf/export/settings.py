"""Validation of the export-time inference settings (pure Python: the CLI checks them before loading TensorFlow)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from sassnet_tf.export.errors import ExportError

# The V-Net halves each axis four times.
PATCH_MULTIPLE = 16
NORMALIZATIONS = ("zscore",)


def _int_triple(value: Any, field: str) -> tuple[int, int, int]:
    try:
        items = tuple(value)
    except TypeError:
        raise ExportError(f"{field}: expected three positive integers, got {value!r}") from None
    if len(items) != 3 or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v <= 0 for v in items
    ):
        raise ExportError(f"{field}: expected three positive integers, got {list(items)!r}")
    return tuple(int(v) for v in items)  # type: ignore[return-value]


def check_export_settings(
    patch_size: Sequence[int],
    stride: Sequence[int],
    threshold: float,
    gaussian: bool,
    batch_size: int,
    preprocessing: Optional[Mapping[str, Any]],
) -> dict:
    """Validate the export-time inference settings and return them as plain JSON-ready values.

    Args:
        patch_size: window (ph, pw, pd); each a positive multiple of 16.
        stride: window step per axis, 1..patch.
        threshold: label = probability > threshold, in (0, 1).
        gaussian: Gaussian importance weighting of overlapping windows.
        batch_size: windows per forward pass, >= 1.
        preprocessing: ``{"normalize": "zscore", "downsample": int >= 1}`` (None: those defaults with downsample 1).

    Returns:
        dict with keys patch_size, stride, threshold, gaussian, batch_size, preprocessing.
    """
    patch = _int_triple(patch_size, "patch_size")
    if any(p % PATCH_MULTIPLE for p in patch):
        raise ExportError(f"patch_size {list(patch)}: each axis must be a multiple of {PATCH_MULTIPLE} (the V-Net "
                          "halves it four times)")
    step = _int_triple(stride, "stride")
    if any(s > p for s, p in zip(step, patch)):
        raise ExportError(f"stride {list(step)}: each axis must be at most the patch size {list(patch)}, or windows "
                          "would leave voxels uncovered")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ExportError(f"threshold: expected a number in (0, 1), got {threshold!r}")
    if not isinstance(gaussian, bool):
        raise ExportError(f"gaussian: expected true or false, got {gaussian!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExportError(f"batch_size: expected a positive integer, got {batch_size!r}")
    prep = dict(preprocessing) if preprocessing is not None else {"normalize": "zscore", "downsample": 1}
    unknown = sorted(set(prep) - {"normalize", "downsample"})
    if unknown:
        raise ExportError(f"preprocessing: unknown keys {unknown}; expected normalize and downsample")
    if prep.get("normalize", "zscore") not in NORMALIZATIONS:
        raise ExportError(f"preprocessing.normalize: {prep['normalize']!r} is not one of {', '.join(NORMALIZATIONS)}")
    downsample = prep.get("downsample", 1)
    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
        raise ExportError(f"preprocessing.downsample: expected an integer >= 1, got {downsample!r}")
    return {
        "patch_size": list(patch),
        "stride": list(step),
        "threshold": float(threshold),
        "gaussian": gaussian,
        "batch_size": batch_size,
        "preprocessing": {"normalize": prep.get("normalize", "zscore"), "downsample": downsample},
    }


__all__ = ["check_export_settings", "PATCH_MULTIPLE", "NORMALIZATIONS"]
