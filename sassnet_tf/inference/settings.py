"""InferenceSettings: the sliding-window settings of one model, validated in one place.

The same settings are read from a run's config (`from_config`), written into and read back from an exported
SavedModel's metadata (`to_metadata` / `from_metadata`), and overridden on the command line (`replace`).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

# The V-Net halves each axis four times.
PATCH_MULTIPLE = 16
NORMALIZATIONS = ("zscore",)


class InferenceSettingsError(ValueError):
    """An inference setting is invalid; the message names the field, the value and what was expected.

    Args:
        field: the setting's name (patch_size, stride, threshold, gaussian, batch_size, downsample, normalize).
        message: the rest of the message.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}{message}")
        self.field = field


def int_triple(value: Any, field: str) -> tuple:
    """`value` as a tuple of three positive ints (whole floats accepted); InferenceSettingsError naming `field`."""
    try:
        items = tuple(value)
    except TypeError:
        raise InferenceSettingsError(field, f": expected three positive integers, got {value!r}") from None
    if len(items) != 3 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v <= 0 for v in items):
        raise InferenceSettingsError(field, f": expected three positive integers, got {list(items)!r}")
    return tuple(int(v) for v in items)


def check_stride(stride: Any, patch: tuple) -> tuple:
    """The sliding window's stride as three ints, each 1..patch (wider steps would leave voxels uncovered)."""
    stride = int_triple(stride, "stride")
    if any(s > p for s, p in zip(stride, patch)):
        raise InferenceSettingsError("stride", f" {list(stride)}: each axis must be at most the patch size "
                                     f"{list(patch)}, or windows would leave voxels uncovered")
    return stride


def check_count(value: Any, field: str) -> int:
    """An integer >= 1 (not a bool; numpy integers accepted), e.g. batch_size, downsample."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InferenceSettingsError(field, f": expected an integer >= 1, got {value!r}")
    return int(value)


def check_probability(value: Any, field: str) -> float:
    """A number strictly between 0 and 1 (not a bool), e.g. threshold."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise InferenceSettingsError(field, f": expected a number in (0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class InferenceSettings:
    """How a model segments a volume.

    Args:
        patch_size: window (ph, pw, pd), each a positive multiple of 16 (the training patch).
        stride: step between windows per axis, 1..patch (the paper: 18, 18, 4).
        threshold: label = probability > threshold, in (0, 1).
        gaussian: Gaussian importance weighting of overlapping windows (else a plain average).
        batch_size: windows per forward pass, >= 1.
        downsample: integer factor the model's input is reduced by (2 = "LA half resolution"); outputs are brought
            back to the input's grid.
        normalize: the intensity normalisation the model expects of a raw scan ("zscore").
    """

    patch_size: tuple
    stride: tuple = (18, 18, 4)
    threshold: float = 0.5
    gaussian: bool = False
    batch_size: int = 4
    downsample: int = 1
    normalize: str = "zscore"

    def __post_init__(self):
        patch = int_triple(self.patch_size, "patch_size")
        if any(p % PATCH_MULTIPLE for p in patch):
            raise InferenceSettingsError("patch_size", f" {list(patch)}: each axis must be a multiple of "
                                         f"{PATCH_MULTIPLE} (the V-Net halves it four times)")
        stride = check_stride(self.stride, patch)
        threshold = check_probability(self.threshold, "threshold")
        if not isinstance(self.gaussian, bool):
            raise InferenceSettingsError("gaussian", f": expected true or false, got {self.gaussian!r}")
        for field in ("batch_size", "downsample"):
            object.__setattr__(self, field, check_count(getattr(self, field), field))
        if self.normalize not in NORMALIZATIONS:
            raise InferenceSettingsError("normalize", f": {self.normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
        object.__setattr__(self, "patch_size", patch)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "threshold", float(threshold))

    def replace(self, **changes) -> "InferenceSettings":
        """A copy with `changes` (None values ignored), validated."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_config(cls, config) -> "InferenceSettings":
        """The settings of a training run (`sassnet_tf.config.Config`)."""
        return cls(patch_size=tuple(config.data.patch_size), stride=tuple(config.eval.stride),
                   threshold=float(config.eval.threshold), gaussian=bool(config.eval.gaussian),
                   batch_size=int(config.eval.batch_size), downsample=int(config.data.downsample))

    def to_metadata(self) -> dict:
        """The JSON fields an exported SavedModel's ``metadata`` signature carries (DESIGN.md "SavedModel")."""
        return {"patch_size": list(self.patch_size), "stride": list(self.stride), "threshold": self.threshold,
                "gaussian": self.gaussian, "batch_size": self.batch_size,
                "preprocessing": {"normalize": self.normalize, "downsample": self.downsample}}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> "InferenceSettings":
        """The settings in a SavedModel's metadata JSON (older exports: the defaults for missing fields)."""
        if not isinstance(meta, Mapping) or "patch_size" not in meta:
            raise InferenceSettingsError("patch_size", f": missing; metadata {str(meta)[:200]}")
        prep = meta.get("preprocessing") or {}
        if not isinstance(prep, Mapping):
            raise InferenceSettingsError("preprocessing", f": expected an object, got {prep!r}")
        unknown = sorted(set(prep) - {"normalize", "downsample"})
        if unknown:
            raise InferenceSettingsError("preprocessing",
                                         f": unknown keys {unknown}; expected normalize and downsample")
        return cls(patch_size=meta["patch_size"], stride=meta.get("stride", (18, 18, 4)),
                   threshold=meta.get("threshold", 0.5), gaussian=meta.get("gaussian", False),
                   batch_size=meta.get("batch_size", 4), downsample=prep.get("downsample", 1),
                   normalize=prep.get("normalize", "zscore"))
