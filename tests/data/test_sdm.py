"""sassnet_tf.data.sdm against an independent computation written out as REFERENCE.md describes it."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.ndimage import distance_transform_edt

from sassnet_tf.data.sdm import compute_sdm, inner_boundary

segmentation = pytest.importorskip("skimage.segmentation")


def reference_sdm(label):
    """REFERENCE.md, literally: scikit-image boundary, scipy EDTs, each term min-max normalised on the patch."""
    posmask = label.astype(bool)
    if not posmask.any():
        return np.zeros(label.shape)
    negmask = ~posmask
    posdis = distance_transform_edt(posmask)
    negdis = distance_transform_edt(negmask)
    boundary = segmentation.find_boundaries(posmask, mode="inner").astype(np.uint8)
    sdm = (negdis - negdis.min()) / (negdis.max() - negdis.min()) - (posdis - posdis.min()) / (
        posdis.max() - posdis.min())
    sdm[boundary == 1] = 0
    return sdm


def random_blobs(rng, shape, fraction):
    field = ndimage.gaussian_filter(rng.random(shape), sigma=rng.uniform(0.8, 2.5))
    return (field > np.quantile(field, 1 - fraction)).astype(np.uint8)


def anatomy_like(shape=(40, 36, 24)):
    """An ellipsoidal chamber with two tubes leaving it, cut by the patch border (as a crop would)."""
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((x - 18) / 12.0) ** 2 + ((y - 15) / 9.0) ** 2 + ((z - 12) / 7.0) ** 2 <= 1
    tube1 = ((y - 15) ** 2 + (z - 14) ** 2 <= 9) & (x >= 18)
    tube2 = ((x - 12) ** 2 + (z - 9) ** 2 <= 6) & (y <= 15)
    return (body | tube1 | tube2).astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(6, 30, size=3))
    label = random_blobs(rng, shape, rng.uniform(0.02, 0.8))
    out = compute_sdm(label)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, reference_sdm(label), atol=1e-6)


def test_matches_reference_on_anatomy_like_label():
    label = anatomy_like()
    np.testing.assert_allclose(compute_sdm(label), reference_sdm(label), atol=1e-6)


def test_matches_reference_on_a_phantom_crop():
    from sassnet_tf.data.phantom import phantom_case

    _, label = phantom_case((64, 56, 32), seed=3)
    crop = label[10:42, 8:40, 4:20]
    assert 0 < crop.mean() < 1
    np.testing.assert_allclose(compute_sdm(crop), reference_sdm(crop), atol=1e-6)


def test_single_voxel_and_touching_border():
    label = np.zeros((7, 6, 5), np.uint8)
    label[0, 0, 0] = 1
    np.testing.assert_allclose(compute_sdm(label), reference_sdm(label), atol=1e-6)
    label[:, :3, :] = 1  # a slab against three borders
    np.testing.assert_allclose(compute_sdm(label), reference_sdm(label), atol=1e-6)


def test_inner_boundary_matches_skimage():
    rng = np.random.default_rng(7)
    for _ in range(10):
        label = rng.random((9, 8, 7)) < rng.uniform(0.1, 0.9)
        np.testing.assert_array_equal(inner_boundary(label),
                                      segmentation.find_boundaries(label, mode="inner"))


def test_signs_and_range():
    label = anatomy_like()
    out = compute_sdm(label)
    boundary = inner_boundary(label)
    assert out.min() == pytest.approx(-1.0) and out.max() == pytest.approx(1.0)
    assert (out[label.astype(bool) & ~boundary] < 0).all()
    assert (out[~label.astype(bool)] > 0).all()
    assert (out[boundary] == 0).all()


def test_no_foreground_gives_zeros():
    out = compute_sdm(np.zeros((5, 6, 7), np.uint8))
    assert out.dtype == np.float32 and not out.any()


def test_all_foreground_is_finite_and_inside():
    out = compute_sdm(np.ones((7, 8, 9), np.uint8))
    assert np.isfinite(out).all()
    # Depth below the patch border: 0 on the border, -1 at the deepest voxel, negative in between.
    assert out.min() == pytest.approx(-1.0)
    assert (out[0] == 0).all() and (out[:, :, -1] == 0).all()
    assert (out[1:-1, 1:-1, 1:-1] < 0).all()
    assert not compute_sdm(np.ones((2, 5, 5))).any()  # no interior at all: zeros, not NaN


def test_wrong_rank():
    with pytest.raises(ValueError, match="one \\[H, W, D\\] patch"):
        compute_sdm(np.zeros((4, 4)))
