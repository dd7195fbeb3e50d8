"""Resampling between a model's input grid and the scan's: trilinear upsampling of probability and SDM maps.

(Downsampling of images and labels lives with the readers: `sassnet_tf.data.io.downsample_volume` / `downsample_label`.)
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


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
