"""largest_connected_component: connectivity, ties, empty masks."""

import numpy as np
import pytest

from sassnet_tf.inference.postprocess import largest_connected_component


def test_keeps_the_largest_blob():
    mask = np.zeros((20, 20, 10), np.uint8)
    mask[2:8, 2:8, 2:6] = 1  # 144 voxels
    mask[12:15, 12:15, 5:8] = 1  # 27 voxels
    mask[18, 0, 0] = 1
    out = largest_connected_component(mask)
    assert out.dtype == np.uint8 and out.shape == mask.shape
    expected = np.zeros_like(mask)
    expected[2:8, 2:8, 2:6] = 1
    np.testing.assert_array_equal(out, expected)


def test_default_is_26_connectivity_like_skimage_label():
    # Two cubes touching only by a corner: one component with full connectivity, two with face connectivity.
    mask = np.zeros((8, 8, 8), bool)
    mask[0:2, 0:2, 0:2] = True  # 8 voxels
    mask[2:5, 2:5, 2:5] = True  # 27 voxels, touches (1,1,1) via corner (2,2,2)
    np.testing.assert_array_equal(largest_connected_component(mask), mask.astype(np.uint8))
    six = largest_connected_component(mask, connectivity=1)
    assert six.sum() == 27 and not six[0:2, 0:2, 0:2].any()
    # Edge contact (18-connectivity) joins them, too, but face connectivity does not.
    edge = np.zeros((8, 8, 8), bool)
    edge[0:2, 0:2, 0:4] = True  # 16
    edge[2:4, 2:4, 0:2] = True  # 8, touches along the edge x=1..2, y=1..2
    assert largest_connected_component(edge, connectivity=2).sum() == 24
    assert largest_connected_component(edge, connectivity=1).sum() == 16


def test_skimage_agrees_when_installed():
    measure = pytest.importorskip("skimage.measure")
    rng = np.random.default_rng(0)
    mask = rng.random((24, 20, 12)) > 0.7
    labels = measure.label(mask)  # default connectivity, as the reference calls it
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    expected = (labels == np.argmax(sizes)).astype(np.uint8)
    np.testing.assert_array_equal(largest_connected_component(mask), expected)


def test_empty_mask_and_tie():
    empty = np.zeros((5, 6, 7), np.float32)
    out = largest_connected_component(empty)
    assert out.dtype == np.uint8 and out.shape == (5, 6, 7) and not out.any()
    tie = np.zeros((10, 3, 3), np.uint8)
    tie[1:3] = 1
    tie[6:8] = 1
    out = largest_connected_component(tie)
    assert out[1:3].all() and not out[6:8].any()


@pytest.mark.parametrize("connectivity", [0, 4])
def test_bad_connectivity(connectivity):
    with pytest.raises(ValueError, match="connectivity"):
        largest_connected_component(np.ones((3, 3, 3)), connectivity=connectivity)


def test_deepest_component_is_the_thickest_not_the_largest():
    from sassnet_tf.inference.postprocess import deepest_connected_component

    shape = (60, 60, 20)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    r = np.sqrt(((grid[..., :2] - 30) ** 2).sum(-1))
    ring = (r > 26) & (r <= 29)  # a thin shell (a fat layer): more voxels than the ball
    ball = ((grid - [30, 30, 10]) ** 2).sum(-1) <= 6 ** 2
    mask = ring | ball
    assert ring.sum() > ball.sum()
    np.testing.assert_array_equal(largest_connected_component(mask), ring.astype(np.uint8))
    np.testing.assert_array_equal(deepest_connected_component(mask), ball.astype(np.uint8))
    # outside the array is background: a slab along the border is as thin as it looks
    slab = np.zeros(shape, bool)
    slab[:3] = True
    np.testing.assert_array_equal(deepest_connected_component(slab | ball), ball.astype(np.uint8))
    assert not deepest_connected_component(np.zeros(shape)).any()
    # equal depth: the larger one
    two = np.zeros((20, 40), bool)
    two[2:7, 2:7] = True
    two[2:7, 10:30] = True
    assert deepest_connected_component(two, connectivity=2).sum() == 5 * 20
    with pytest.raises(ValueError, match="deepest_connected_component: connectivity"):
        deepest_connected_component(two, connectivity=3)
