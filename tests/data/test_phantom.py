"""sassnet_tf.data.phantom: determinism, anatomy sanity, LA layout on disk, the cache."""

import json
import logging
import os
import threading

import numpy as np
import pytest
from scipy import ndimage

from sassnet_tf.data import phantom
from sassnet_tf.data.dataset_layout import open_dataset
from sassnet_tf.data.errors import DataError
from sassnet_tf.data.phantom import ensure_phantom_dataset, generate_phantom_dataset, phantom_case

SMALL = (64, 56, 32)


def test_same_seed_same_arrays_other_seed_other_arrays():
    a_image, a_label = phantom_case(SMALL, seed=(5, 0, 1))
    b_image, b_label = phantom_case(SMALL, seed=(5, 0, 1))
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_label, b_label)
    c_image, c_label = phantom_case(SMALL, seed=(5, 0, 2))
    assert c_image.shape != a_image.shape or not np.array_equal(c_label, a_label)


@pytest.mark.parametrize("seed", range(4))
def test_case_sanity(seed):
    image, label, parts = phantom_case(SMALL, seed=seed, return_parts=True)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert image.shape == label.shape and image.shape[2] == SMALL[2]
    assert set(np.unique(label)) == {0, 1}
    assert np.isfinite(image).all()
    assert 0.02 < label.mean() < 0.25  # LA: about 9 %
    assert 0.4 < image.mean() < 1.4 and 0.7 < image.std() < 1.3  # LA crops: mean ~0.9, std ~1
    fg = label.astype(bool)
    assert ndimage.label(fg)[1] == 1  # one atrium, veins attached
    # The label sits inside the crop with a margin in x and y (the LA crop rule).
    for axis in range(2):
        hit = np.flatnonzero(fg.any(axis=tuple(a for a in range(3) if a != axis)))
        assert hit[0] >= 2 and hit[-1] <= image.shape[axis] - 3
    # Confounders: bright, unlabeled, as bright as the blood pool.
    confounders = parts["confounders"]
    assert len(parts["names"]) >= 2
    assert confounders.sum() > 0.1 * fg.sum()
    assert not (confounders & fg).any()
    assert abs(np.median(image[confounders]) - np.median(image[fg])) < 0.5 * image[fg].std() + 0.5
    assert np.median(image[fg]) > np.median(image[~fg & ~confounders]) + 1.0


def test_confounders_touch_or_nearly_touch_the_label():
    gaps = []
    for seed in range(4):
        _, label, parts = phantom_case(SMALL, seed=seed, return_parts=True)
        distance = ndimage.distance_transform_edt(~label.astype(bool))
        gaps.append(distance[parts["confounders"]].min())
    assert min(gaps) <= 1.5
    assert max(gaps) <= 4.0


def test_sizes_vary_like_la_crops():
    shapes = np.array([phantom_case(SMALL, seed=(0, 0, i))[0].shape for i in range(6)])
    assert (shapes[:, 2] == SMALL[2]).all()
    assert len(set(map(tuple, shapes[:, :2]))) > 1
    for axis in range(2):
        assert 0.7 * SMALL[axis] <= shapes[:, axis].min() and shapes[:, axis].max() <= 1.35 * SMALL[axis]


def test_bad_shape():
    with pytest.raises(DataError, match="expected three sizes"):
        phantom_case((64, 56))


def test_generate_writes_la_layout(tmp_path):
    root = generate_phantom_dataset(str(tmp_path / "ph"), n_train=3, n_test=1, shape=SMALL, seed=2)
    layout = open_dataset(root)
    assert layout.format == "la"
    train = layout.read_list("train.list")
    assert train == ["phantom-train-000", "phantom-train-001", "phantom-train-002"]
    assert layout.read_list("test.list") == ["phantom-test-000"]
    case = layout.load(train[1])
    image, label = phantom_case(SMALL, seed=(2, 0, 1))
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.label, label)
    assert layout.load("phantom-test-000").label is not None
    meta = json.load(open(os.path.join(root, "phantom.json")))
    assert meta["n_train"] == 3 and meta["shape"] == list(SMALL) and len(meta["cases"]) == 4


def test_adding_cases_keeps_earlier_ones(tmp_path):
    a = open_dataset(generate_phantom_dataset(str(tmp_path / "a"), n_train=1, n_test=0, shape=SMALL, seed=4))
    b = open_dataset(generate_phantom_dataset(str(tmp_path / "b"), n_train=2, n_test=0, shape=SMALL, seed=4))
    np.testing.assert_array_equal(a.load("phantom-train-000").image, b.load("phantom-train-000").image)
    assert not os.path.exists(os.path.join(a.root, "test.list"))


def test_ensure_caches_and_logs(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="sassnet_tf")
    root = ensure_phantom_dataset(n_train=2, n_test=1, shape=SMALL, seed=0, cache_dir=str(tmp_path))
    assert os.path.dirname(root) == str(tmp_path) and os.path.basename(root).startswith("phantom-")
    assert any("generating the built-in phantom dataset" in r.message and root in r.message for r in caplog.records)
    caplog.clear()

    def boom(*args, **kwargs):
        raise AssertionError("the cached dataset must be reused")

    monkeypatch.setattr(phantom, "generate_phantom_dataset", boom)
    assert ensure_phantom_dataset(n_train=2, n_test=1, shape=SMALL, seed=0, cache_dir=str(tmp_path)) == root
    assert any("using the built-in phantom dataset" in r.message and root in r.message for r in caplog.records)
    # Other parameters: another folder.
    assert phantom.phantom_cache_root(2, 1, SMALL, 1, str(tmp_path)) != root
    # No temporary folders left behind.
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_ensure_uses_env_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SASSNET_TF_CACHE", str(tmp_path / "env"))
    assert phantom.phantom_cache_root(2, 1, SMALL, 0).startswith(str(tmp_path / "env") + os.sep)


def test_ensure_refuses_an_incomplete_folder(tmp_path):
    root = phantom.phantom_cache_root(2, 0, SMALL, 0, str(tmp_path))
    os.makedirs(root)
    with pytest.raises(DataError, match="incomplete phantom dataset"):
        ensure_phantom_dataset(n_train=2, n_test=0, shape=SMALL, seed=0, cache_dir=str(tmp_path))


def test_ensure_is_safe_when_two_callers_race(tmp_path):
    results, errors = [], []
    start = threading.Barrier(2)

    def call():
        try:
            start.wait()
            results.append(ensure_phantom_dataset(n_train=2, n_test=0, shape=SMALL, seed=9,
                                                  cache_dir=str(tmp_path)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 2 and results[0] == results[1]
    assert open_dataset(results[0]).read_list("train.list") == ["phantom-train-000", "phantom-train-001"]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_field_of_view_renders_the_same_case_around_its_crop():
    """field_of_view: the crop's anatomy in a larger scan; the crop's label unchanged, the crop's region normalised
    as the crop, air outside the body, and bright unlabeled structures beyond the crop."""
    crop_image, crop_label = phantom_case(SMALL, seed=(3, 1, 0))
    image, label, parts = phantom_case(SMALL, seed=(3, 1, 0), return_parts=True, field_of_view=(160, 150))
    assert image.shape == label.shape == (160, 150, SMALL[2]) and np.isfinite(image).all()
    region = tuple(slice(a, b) for a, b in parts["crop"])
    assert [b - a for a, b in parts["crop"]] == list(crop_label.shape)
    np.testing.assert_array_equal(label[region], crop_label)
    assert label.sum() == crop_label.sum()  # nothing labeled outside the crop
    inner = image[region]  # the crop's normalisation (test_case_sanity's ranges); the field's is not
    assert 0.4 < inner.mean() < 1.4 and 0.7 < inner.std() < 1.3 and image.mean() < inner.mean() - 0.3
    corners = image[:8, :8], image[-8:, -8:]
    assert all(c.mean() < image[region].mean() - 0.5 for c in corners)  # air
    outside = np.ones(label.shape, bool)
    outside[region] = False
    assert (image[outside] > 1.5).mean() > 0.001  # the fat layer and other bright structures
    with pytest.raises(DataError, match="field_of_view"):
        phantom_case(SMALL, seed=0, field_of_view=(160,))
    small = phantom_case(SMALL, seed=(3, 1, 0), field_of_view=(8, 8))[0]  # smaller than the crop: the crop's size
    assert small.shape == crop_image.shape
