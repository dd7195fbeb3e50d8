"""Metrics against hand-computed values and a brute-force (pairwise) re-implementation of medpy's definitions."""

import math

import numpy as np
import pytest

from sassnet_tf import metrics
from sassnet_tf.metrics import asd, assd, case_metrics, dice, hd95, jaccard, paper_table_row, summarize


def brute_surface(mask):
    """Foreground voxels with at least one background face neighbour (outside the array = background)."""
    padded = np.pad(mask, 1)
    interior = mask.copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~interior


def brute_directed(a, b, spacing=(1.0, 1.0, 1.0)):
    pa = np.argwhere(brute_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(brute_surface(b)) * np.asarray(spacing)
    return np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(axis=1)


def brute_hd95(a, b, spacing=(1.0, 1.0, 1.0)):
    return np.percentile(np.hstack([brute_directed(a, b, spacing), brute_directed(b, a, spacing)]), 95)


def cube(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return mask


def sphere(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    grid = np.indices(shape).astype(np.float64)
    d2 = sum(((grid[i] - centre[i]) * spacing[i]) ** 2 for i in range(3))
    return d2 <= radius**2


def test_cube_and_its_centre_voxel_by_hand():
    big = cube((9, 9, 9), (3, 3, 3), (6, 6, 6))  # 27 voxels, surface = 26 (all but the centre)
    centre = cube((9, 9, 9), (4, 4, 4), (5, 5, 5))
    assert dice(big, centre) == pytest.approx(2 / 28)
    assert jaccard(big, centre) == pytest.approx(1 / 27)
    # big -> centre: 6 face neighbours at 1, 12 edge neighbours at sqrt 2, 8 corners at sqrt 3.
    assert asd(big, centre) == pytest.approx((6 + 12 * math.sqrt(2) + 8 * math.sqrt(3)) / 26)
    assert asd(centre, big) == pytest.approx(1.0)  # directed: the centre's distance to the cube's surface
    # 27 pooled distances: 7 ones, 12 sqrt 2, 8 sqrt 3; the 95th percentile falls between the 25th and 26th.
    assert hd95(big, centre) == pytest.approx(math.sqrt(3))
    assert assd(big, centre) == pytest.approx((7 + 12 * math.sqrt(2) + 8 * math.sqrt(3)) / 27)


@pytest.mark.parametrize("k", [0, 1, 2, 4])
def test_cubes_offset_by_k_voxels(k):
    a = cube((24, 16, 16), (4, 3, 3), (14, 13, 13))  # 10x10x10
    b = cube((24, 16, 16), (4 + k, 3, 3), (14 + k, 13, 13))
    assert dice(a, b) == pytest.approx((10 - k) / 10)
    assert jaccard(a, b) == pytest.approx((10 - k) / (10 + k))
    assert hd95(a, b) == pytest.approx(brute_hd95(a, b))
    assert asd(a, b) == pytest.approx(brute_directed(a, b).mean())
    if k:
        # The far faces are exactly k apart, and nothing is farther: the Hausdorff distance is k.
        assert brute_directed(a, b).max() == pytest.approx(k)
        assert 0 < hd95(a, b) <= k
    else:
        assert hd95(a, b) == 0 and asd(a, b) == 0 and dice(a, b) == 1


def test_thin_plates_with_anisotropic_spacing():
    a = cube((10, 8, 8), (2, 1, 1), (3, 7, 7))  # one-voxel plates: every voxel is surface
    b = cube((10, 8, 8), (5, 1, 1), (6, 7, 7))
    assert hd95(a, b) == pytest.approx(3.0) and asd(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(0.5, 1, 1)) == pytest.approx(1.5)
    assert asd(a, b, spacing=(2.0, 0.3, 0.3)) == pytest.approx(6.0)
    assert hd95(a, b, spacing=2.0) == pytest.approx(6.0)  # one number applies to every axis


@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 1.0), (0.625, 1.25, 2.5)])
def test_spheres_match_brute_force(spacing):
    s = spacing or (1.0, 1.0, 1.0)
    a = sphere((26, 22, 20), (12, 10, 9), 6.0, s if spacing else (1, 1, 1))
    b = sphere((26, 22, 20), (14, 9, 10), 5.0, s if spacing else (1, 1, 1))
    assert hd95(a, b, spacing) == pytest.approx(brute_hd95(a, b, s))
    assert asd(a, b, spacing) == pytest.approx(brute_directed(a, b, s).mean())
    assert asd(b, a, spacing) == pytest.approx(brute_directed(b, a, s).mean())
    pooled = np.hstack([brute_directed(a, b, s), brute_directed(b, a, s)])
    assert assd(a, b, spacing) == pytest.approx(pooled.mean())
    row = case_metrics(a, b, spacing)
    assert row["hd95"] == pytest.approx(brute_hd95(a, b, s)) and row["dice"] == pytest.approx(dice(a, b))
    assert row["asd"] == pytest.approx(asd(a, b, spacing)) and row["assd"] == pytest.approx(pooled.mean())


def test_mask_touching_the_array_border():
    a = cube((8, 8, 8), (0, 0, 0), (4, 8, 8))  # fills the array along y and z: the border is surface
    b = cube((8, 8, 8), (1, 0, 0), (5, 8, 8))
    assert hd95(a, b) == pytest.approx(brute_hd95(a, b))
    assert asd(a, b) == pytest.approx(brute_directed(a, b).mean())


def test_empty_rules():
    empty = np.zeros((6, 6, 6), np.uint8)
    full = cube((6, 6, 6), (1, 1, 1), (4, 4, 4)).astype(np.uint8)
    assert dice(empty, empty) == 1.0 and jaccard(empty, empty) == 1.0
    assert math.isnan(hd95(empty, empty)) and math.isnan(asd(empty, empty))
    for pred, gt in ((empty, full), (full, empty)):
        assert dice(pred, gt) == 0.0 and jaccard(pred, gt) == 0.0
        assert math.isnan(hd95(pred, gt)) and math.isnan(asd(pred, gt)) and math.isnan(assd(pred, gt))
        row = case_metrics(pred, gt)
        assert row["dice"] == 0.0 and math.isnan(row["hd95"]) and math.isnan(row["asd"])
    with pytest.raises(ValueError, match="ground-truth mask is empty"):
        metrics.directed_surface_distances(full, empty)
    assert metrics.directed_surface_distances(empty, full).size == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="spacing"):
        hd95(np.ones((4, 4, 4)), np.ones((4, 4, 4)), spacing=(1, 1))
    with pytest.raises(ValueError, match="spacing"):
        asd(np.ones((4, 4, 4)), np.ones((4, 4, 4)), spacing=(1, 0, 1))


def test_summarize_and_paper_row():
    rows = [
        {"case": "a", "dice": 0.9, "jaccard": 0.8, "hd95": 4.0, "asd": 1.0},
        {"case": "b", "dice": 0.7, "jaccard": 0.6, "hd95": 8.0, "asd": 3.0},
        {"case": "empty prediction", "dice": 0.0, "jaccard": 0.0, "hd95": math.nan, "asd": math.nan},
    ]
    s = summarize(rows)
    assert s["cases"] == 3
    assert s["dice"]["mean"] == pytest.approx(1.6 / 3) and s["dice"]["n"] == 3 and s["dice"]["n_undefined"] == 0
    assert s["dice"]["std"] == pytest.approx(np.std([0.9, 0.7, 0.0]))
    assert s["hd95"]["mean"] == pytest.approx(6.0) and s["hd95"]["std"] == pytest.approx(2.0)
    assert s["hd95"]["n"] == 2 and s["hd95"]["n_undefined"] == 1
    row = paper_table_row(s)
    assert row["Dice (%)"] == pytest.approx(160 / 3) and row["Jaccard (%)"] == pytest.approx(140 / 3)
    assert row["ASD (voxel)"] == pytest.approx(2.0) and row["95HD (voxel)"] == pytest.approx(6.0)
    all_nan = summarize([{"dice": 0.0, "jaccard": 0.0, "hd95": math.nan, "asd": math.nan}])
    assert math.isnan(all_nan["hd95"]["mean"]) and all_nan["hd95"]["n_undefined"] == 1
    with pytest.raises(ValueError, match="hd95"):
        summarize([{"dice": 1.0, "jaccard": 1.0, "asd": 0.0}])
