"""The reference's normalised signed distance map (SDM) of a binary label patch: negative inside, positive outside,
zero on the inner boundary, in [-1, 1].

Per patch (REFERENCE.md): ``posdis`` = Euclidean distance transform (EDT) of the foreground (each foreground voxel's
distance to the nearest background voxel), ``negdis`` = EDT of the background;
``sdm = (negdis - min) / (max - min) - (posdis - min) / (max - min)``, each term min-max normalised on its own over
the patch; foreground voxels with a background neighbour (scikit-image ``find_boundaries(mode="inner")``,
connectivity 1) set to 0.

Degenerate patches (the reference returns zeros for the first and NaN for the second):

- no foreground: all zeros (as the reference);
- no background: the patch exterior is taken as background, so ``sdm = -(posdis - min) / (max - min)`` with
  ``posdis`` the distance to the nearest voxel outside the patch: 0 on the patch border, -1 deepest inside. Never NaN.
  A patch only two voxels thick along some axis has no depth to measure: all zeros.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_CROSS = ndimage.generate_binary_structure(3, 1)


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with at least one 6-connected background neighbour inside the array.

    Same as ``skimage.segmentation.find_boundaries(mask, connectivity=1, mode="inner")``: scikit-image compares a
    grey dilation and erosion (footprint: the cross) whose borders reflect, so voxels beyond the array never count
    as background -- here ``border_value=1``.
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=1)


def _normalised(distance: np.ndarray) -> np.ndarray:
    lo, hi = distance.min(), distance.max()
    if hi <= lo:
        return np.zeros_like(distance)
    return (distance - lo) / (hi - lo)


def _foreground_edt(fg: np.ndarray) -> np.ndarray:
    """``distance_transform_edt(fg)`` computed on the foreground's bounding box grown by one voxel only.

    Exact: that box's shell (clipped to the array) is background, and for a foreground voxel the nearest background
    voxel clamped onto the box is background too and no farther away. Saves most of the EDT's time.
    """
    coords = [np.flatnonzero(fg.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    box = tuple(slice(max(c[0] - 1, 0), min(c[-1] + 2, n)) for c, n in zip(coords, fg.shape))
    out = np.zeros(fg.shape, np.float64)
    out[box] = ndimage.distance_transform_edt(fg[box])
    return out


def compute_sdm(label: np.ndarray) -> np.ndarray:
    """Normalised SDM of one binary patch.

    Args:
        label: ``[H, W, D]`` array, non-zero = foreground.

    Returns:
        float32 ``[H, W, D]`` in [-1, 1].
    """
    fg = np.asarray(label) != 0
    if fg.ndim != 3:
        raise ValueError(f"compute_sdm: label has shape {fg.shape}, expected one [H, W, D] patch")
    if not fg.any():
        return np.zeros(fg.shape, np.float32)
    if fg.all():
        # No background inside: measure depth from a one-voxel background shell around the patch.
        padded = np.pad(fg, 1, constant_values=False)
        posdis = ndimage.distance_transform_edt(padded)[1:-1, 1:-1, 1:-1]
        return (-_normalised(posdis)).astype(np.float32)
    posdis = _foreground_edt(fg)
    negdis = ndimage.distance_transform_edt(~fg)
    sdm = _normalised(negdis) - _normalised(posdis)
    sdm[inner_boundary(fg)] = 0.0
    return sdm.astype(np.float32)
