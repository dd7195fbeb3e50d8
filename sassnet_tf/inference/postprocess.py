"""Post-processing of a binary segmentation: keep the largest connected component (the reference's "NMS" option).

Connectivity: the reference labels components with ``skimage.measure.label`` and its default ``connectivity=None``,
which the scikit-image documentation defines as full connectivity (``input.ndim`` orthogonal hops), i.e. 26-connected
voxels in 3-D. That is the default here (``connectivity=3``); 1 gives 6-connectivity, 2 gives 18.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FULL_CONNECTIVITY = 3


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
    mask = np.asarray(mask)
    if mask.ndim < 1:
        raise ValueError(f"largest_connected_component: expected an array with at least one axis, got {mask.shape}")
    connectivity = int(connectivity)
    if not 1 <= connectivity <= mask.ndim:
        raise ValueError(
            f"largest_connected_component: connectivity must be between 1 and {mask.ndim} for a "
            f"{mask.ndim}-D mask, got {connectivity}"
        )
    foreground = mask != 0
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    labels, count = ndimage.label(foreground, structure=structure)
    if count == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # background
    # scipy numbers components in raster order of their first voxel, so argmax keeps the first one of a tie.
    return (labels == int(np.argmax(sizes))).astype(np.uint8)
