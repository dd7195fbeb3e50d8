"""The export-time inference settings: `InferenceSettings` (the one validation), with errors as ExportError.

Pure Python: the CLI checks them before loading TensorFlow.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from sassnet_tf.export.errors import ExportError
from sassnet_tf.inference.settings import NORMALIZATIONS, PATCH_MULTIPLE, InferenceSettings, InferenceSettingsError


def check_export_settings(
    patch_size: Sequence[int],
    stride: Sequence[int],
    threshold: float,
    gaussian: bool,
    batch_size: int,
    preprocessing: Optional[Mapping[str, Any]],
) -> dict:
    """Validate the export-time inference settings and return them as the metadata's JSON-ready values.

    Args:
        patch_size, stride, threshold, gaussian, batch_size: see `InferenceSettings`.
        preprocessing: ``{"normalize": "zscore", "downsample": int >= 1}`` (None: those defaults with downsample 1).

    Returns:
        dict with keys patch_size, stride, threshold, gaussian, batch_size, preprocessing.
    """
    try:
        settings = InferenceSettings.from_metadata({
            "patch_size": patch_size, "stride": stride, "threshold": threshold, "gaussian": gaussian,
            "batch_size": batch_size, "preprocessing": {} if preprocessing is None else preprocessing})
    except InferenceSettingsError as exc:
        raise ExportError(str(exc)) from None
    return settings.to_metadata()


__all__ = ["check_export_settings", "PATCH_MULTIPLE", "NORMALIZATIONS"]
