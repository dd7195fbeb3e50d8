"""Post-processing of a binary segmentation: keep the largest connected component (the reference's "NMS" option),
or the deepest one (whole-scan mode's localisation).

Connectivity: the reference labels components with ``skimage.measure.label`` and its default ``connectivity=None``,
which the scikit-image documentation defines as full connectivity (``input.ndim`` orthogonal hops), i.e. 26-connected
voxels in 3-D. That is the default here (``connectivity=3``); 1 gives 6-connectivity, 2 gives 18.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FULL_CONNECTIVITY = 3


def _components(mask, connectivity: int, caller: str):
    """(mask as an array, component labels, count), after checking the arguments."""
    mask = np.asarray(mask)
    if mask.ndim < 1:
        raise ValueError(f"{caller}: expected an array with at least one axis, got {mask.shape}")
    connectivity = int(connectivity)
    if not 1 <= connectivity <= mask.ndim:
        raise ValueError(
            f"{caller}: connectivity must be between 1 and {mask.ndim} for a {mask.ndim}-D mask, got {connectivity}"
        )
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    labels, count = ndimage.label(mask != 0, structure=structure)
    return mask, labels, count


def largest_connected_component(mask, connectivity: int = FULL_CONNECTIVITY) -> np.ndarray:
    """Keep only the largest connected foreground component of a binary mask.

    Ties (two components of the same size) keep the one whose first voxel comes first in C (raster) order.

    Args:
        mask: array of any numeric/bool dtype, non-zero = foreground; 1-D to 3-D (or more).
        connectivity: maximum number of orthogonal hops between neighbours, 1..mask.ndim (3 = 26-connectivity
            in 3-D, scikit-image's default).

    Returns:
        uint8 array of the same shape, 1 on the largest component; all zeros for an empty mask.
    """
    mask, labels, count = _components(mask, connectivity, "largest_connected_component")
    if count == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # background
    # scipy numbers components in raster order of their first voxel, so argmax keeps the first one of a tie.
    return (labels == int(np.argmax(sizes))).astype(np.uint8)


def deepest_connected_component(mask, connectivity: int = FULL_CONNECTIVITY) -> np.ndarray:
    """Keep the connected foreground component that holds the voxel farthest from the background.

    The component with the largest inscribed cube (chessboard distance: 20x faster than the Euclidean one, as good
    for ranking), i.e. the thickest one: how whole-scan mode finds the atrium among false positives in anatomy the
    model never saw, which are thin (a fat layer, vessels) or fragmented (noise) even when they outnumber the
    atrium's voxels. Outside the array counts as background. Ties (same depth) keep the larger component, then the
    first in raster order.

    Args, Returns: as `largest_connected_component`.
    """
    mask, labels, count = _components(mask, connectivity, "deepest_connected_component")
    if count == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    depth = ndimage.distance_transform_cdt(np.pad(mask != 0, 1), metric="chessboard")[(slice(1, -1),) * mask.ndim]
    deepest = ndimage.maximum(depth, labels, index=np.arange(1, count + 1))
    sizes = np.bincount(labels.ravel())[1:]
    best = max(range(count), key=lambda i: (deepest[i], sizes[i], -i))
    return (labels == best + 1).astype(np.uint8)
