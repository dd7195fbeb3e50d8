"""sassnet_tf.data.pipeline: alignment through augmentation, batch composition, reproducibility, resume, errors."""

import logging

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from sassnet_tf.data.dataset_layout import open_dataset  # noqa: E402
from sassnet_tf.data.errors import DataError  # noqa: E402
from sassnet_tf.data.io import Case  # noqa: E402
from sassnet_tf.data.pipeline import (  # noqa: E402
    augment_crop, load_cases, make_train_dataset, make_validation_dataset)
from sassnet_tf.data.sdm import compute_sdm  # noqa: E402

PATCH = (32, 32, 16)
KEYS = ("labeled_image", "label", "sdm", "unlabeled_image")


def _case(case_id, image, label):
    return Case(case_id, f"/synthetic/{case_id}", np.asarray(image, np.float32),
                None if label is None else np.asarray(label, np.uint8), np.eye(4), (1.0, 1.0, 1.0))


def _blob_label(shape, seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), 2.0)
    return (field > np.quantile(field, 0.7)).astype(np.uint8)


def _encoded_case(case_id, shape, seed):
    """image = 2 x (voxel's linear index + 1) + label: the patch tells where each voxel came from and its label.

    Padding (zeros) decodes to index -1.
    """
    label = _blob_label(shape, seed)
    index = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    return _case(case_id, 2.0 * (index + 1.0) + label, label)


def _constant_case(case_id, value, shape=(36, 34, 18), labeled=True):
    return _case(case_id, np.full(shape, value), np.zeros(shape) if labeled else None)


def _batches(ds, n):
    return list(ds.take(n).as_numpy_iterator())


def _centre_pad(volume, patch, fill):
    """Independent of the pipeline: pad each short axis to the patch, the odd voxel after."""
    pads = [((p - s) // 2, p - s - (p - s) // 2) if s < p else (0, 0) for s, p in zip(volume.shape, patch)]
    return np.pad(volume, pads, constant_values=fill)


def _transforms_matching(patch_index, shape):
    """The (k, flip axis) pairs such that the patch is a crop of the rotated, flipped, padded index volume."""
    index = np.arange(np.prod(shape)).reshape(shape)
    found = []
    first = tuple(np.argwhere(patch_index >= 0)[0])
    for k in range(4):
        for axis in range(2):
            volume = _centre_pad(np.flip(np.rot90(index, k, axes=(0, 1)), axis=axis), patch_index.shape, -1)
            where = np.argwhere(volume == patch_index[first])
            if len(where) != 1:
                continue
            start = where[0] - np.array(first)
            if (start < 0).any() or (start + patch_index.shape > volume.shape).any():
                continue
            crop = volume[tuple(slice(s, s + p) for s, p in zip(start, patch_index.shape))]
            if np.array_equal(crop, patch_index):
                found.append((k, axis))
    return found


# ------------------------------------------------------------------------------------------------ alignment


def test_image_label_sdm_stay_aligned_through_augmentation():
    shapes = [(40, 36, 24), (38, 34, 20), (28, 36, 12)]  # the last is smaller than the patch: padded
    labeled = [_encoded_case(f"align-{i}", s, i) for i, s in enumerate(shapes)]
    unlabeled = [_encoded_case(f"align-u{i}", s, 10 + i) for i, s in enumerate(shapes[:2])]
    ds = make_train_dataset(labeled, unlabeled, patch_size=PATCH, labeled_bs=2, unlabeled_bs=2, seed=3)
    seen = set()
    for batch in _batches(ds, 6):
        for key in KEYS:
            assert batch[key].shape == (2, *PATCH, 1) and batch[key].dtype == np.float32
        for b in range(2):
            image, label, sdm = (batch[k][b, ..., 0] for k in ("labeled_image", "label", "sdm"))
            assert set(np.unique(label)) <= {0.0, 1.0}
            padded = image == 0
            np.testing.assert_array_equal(label[~padded], image[~padded] % 2)
            assert not label[padded].any()
            np.testing.assert_array_equal(sdm, compute_sdm(label))
            index = np.where(padded, -1, image // 2 - 1).astype(np.int64)
            source = [s for s in {c.image.shape for c in labeled} if index.max() < np.prod(s)]
            matches = [m for s in source for m in _transforms_matching(index, s)]
            assert matches, "labeled patch is not a rot90/flip/crop of its volume"
            seen.update(matches)
        for b in range(2):
            image = batch["unlabeled_image"][b, ..., 0]
            index = np.where(image == 0, -1, image // 2 - 1).astype(np.int64)
            assert any(_transforms_matching(index, c.image.shape) for c in unlabeled)
    assert len(seen) >= 3  # several rotations / flips actually drawn


def test_augment_crop_draws_every_rotation_and_flip():
    shape = (20, 18, 10)
    index = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    seen = set()
    for seed in range(60):
        patch, none = augment_crop(index, None, (16, 16, 8), np.random.default_rng(seed))
        assert none is None and patch.flags["C_CONTIGUOUS"]
        seen.update(_transforms_matching(patch.astype(np.int64), shape))
    # rot90 k with a flip equals rot90 k+2 with the other flip: all 8 pairs are reachable, each twice over.
    assert len(seen) == 8


# ------------------------------------------------------------------------------------------------ composition


def test_streams_draw_shuffled_epochs_of_their_own_cases():
    labeled = [_constant_case(f"comp-{v}", v) for v in (1, 2, 3)]
    unlabeled = [_constant_case(f"comp-{v}", v, labeled=False) for v in (10, 11, 12, 13)]
    ds = make_train_dataset(labeled, unlabeled, patch_size=PATCH, labeled_bs=2, unlabeled_bs=2, seed=11)
    batches = _batches(ds, 12)
    lab = [int(v) for b in batches for v in b["labeled_image"].reshape(2, -1)[:, 0]]
    unl = [int(v) for b in batches for v in b["unlabeled_image"].reshape(2, -1)[:, 0]]
    lab_epochs = [tuple(lab[i:i + 3]) for i in range(0, 24, 3)]
    unl_epochs = [tuple(unl[i:i + 4]) for i in range(0, 24, 4)]
    assert all(sorted(e) == [1, 2, 3] for e in lab_epochs)
    assert all(sorted(e) == [10, 11, 12, 13] for e in unl_epochs)
    assert len(set(lab_epochs)) > 1 and len(set(unl_epochs)) > 1  # reshuffled each epoch
    for b in batches:
        assert not b["label"].any() and not b["sdm"].any()  # empty label -> zero SDM


def test_supervised_mode_has_an_empty_unlabeled_tensor():
    labeled = [_constant_case("sup-1", 1), _constant_case("sup-2", 2)]
    ds = make_train_dataset(labeled, [], patch_size=PATCH, labeled_bs=3, unlabeled_bs=0, seed=1)
    assert ds.element_spec["unlabeled_image"].shape.as_list() == [0, *PATCH, 1]
    batch = _batches(ds, 1)[0]
    assert batch["labeled_image"].shape == (3, *PATCH, 1)
    assert batch["unlabeled_image"].shape == (0, *PATCH, 1)


# ------------------------------------------------------------------------------------------------ reproducibility


def _cases_for_repro():
    labeled = [_encoded_case(f"rep-{i}", (40, 36, 20), i) for i in range(3)]
    unlabeled = [_encoded_case(f"rep-u{i}", (36, 40, 18), 5 + i) for i in range(3)]
    return labeled, unlabeled


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in KEYS:
            np.testing.assert_array_equal(x[key], y[key])


def test_same_seed_same_batches_whatever_the_parallelism():
    labeled, unlabeled = _cases_for_repro()
    first = _batches(make_train_dataset(labeled, unlabeled, PATCH, seed=5, num_parallel_calls=1, prefetch=0), 3)
    again = _batches(make_train_dataset(labeled, unlabeled, PATCH, seed=5, num_parallel_calls=2), 3)
    auto = _batches(make_train_dataset(labeled, unlabeled, PATCH, seed=5, num_parallel_calls=0, prefetch=-1), 3)
    _assert_same(first, again)
    _assert_same(first, auto)
    other = _batches(make_train_dataset(labeled, unlabeled, PATCH, seed=6), 1)[0]
    assert not np.array_equal(other["labeled_image"], first[0]["labeled_image"])
    # Within a batch the slots draw their own rotation, flip and crop (no shared random state between workers):
    # the source positions (image // 2; the cases share a shape) differ.
    for b in first:
        assert not np.array_equal(b["labeled_image"][0] // 2, b["labeled_image"][1] // 2)


def test_start_step_resumes_exactly():
    labeled, unlabeled = _cases_for_repro()
    full = _batches(make_train_dataset(labeled, unlabeled, PATCH, labeled_bs=2, unlabeled_bs=1, seed=9), 5)
    resumed = _batches(make_train_dataset(labeled, unlabeled, PATCH, labeled_bs=2, unlabeled_bs=1, seed=9,
                                          start_step=3), 2)
    _assert_same(full[3:5], resumed)


# ------------------------------------------------------------------------------------------------ bad input


def test_small_volume_is_padded_and_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger="sassnet_tf")
    small = _case("small-once", np.ones((20, 40, 10)), np.ones((20, 40, 10)))
    for _ in range(2):
        ds = make_train_dataset([small], [], PATCH, labeled_bs=1, unlabeled_bs=0, seed=0)
    messages = [r.getMessage() for r in caplog.records if "small-once" in r.getMessage()]
    assert len(messages) == 1 and "zero-padded" in messages[0] and "(20, 40, 10)" in messages[0]
    batch = _batches(ds, 1)[0]
    image = batch["labeled_image"][0, ..., 0]
    assert image.shape == PATCH
    assert image.sum() == batch["label"].sum() == 20 * 32 * 10  # 20 x 32 x 10 real voxels, zeros around
    assert not image[:, :, :3].any() and not image[:, :, 13:].any()  # D: 10 slices centred in 16


def test_bad_inputs():
    good = _constant_case("bad-1", 1)
    with pytest.raises(DataError, match="has no label"):
        make_train_dataset([_constant_case("bad-2", 2, labeled=False)], [], PATCH, unlabeled_bs=0)
    with pytest.raises(DataError, match="none given but unlabeled_bs is 2"):
        make_train_dataset([good], [], PATCH, unlabeled_bs=2)
    with pytest.raises(DataError, match="at least one labeled case"):
        make_train_dataset([], [good], PATCH)
    with pytest.raises(DataError, match="patch_size"):
        make_train_dataset([good], [good], (32, 32))
    with pytest.raises(DataError, match="labeled_bs must be an integer >= 1"):
        make_train_dataset([good], [good], PATCH, labeled_bs=0)
    with pytest.raises(DataError, match="seed must be"):
        make_train_dataset([good], [good], PATCH, seed=-1)
    mismatch = _case("bad-3", np.zeros((36, 34, 18)), np.zeros((36, 34, 17)))
    with pytest.raises(DataError, match="label shape"):
        make_train_dataset([mismatch], [], PATCH, unlabeled_bs=0)
    with pytest.raises(DataError, match="Case objects"):
        make_train_dataset([np.zeros((4, 4, 4))], [], PATCH, unlabeled_bs=0)


# ------------------------------------------------------------------------------------------------ validation


def test_validation_dataset_centre_crops():
    cases = [_encoded_case(f"val-{i}", s, i) for i, s in enumerate([(40, 36, 24), (34, 32, 16), (30, 36, 20)])]
    ds = make_validation_dataset(cases, PATCH, batch_size=2)
    batches = list(ds.as_numpy_iterator())
    assert [b["labeled_image"].shape[0] for b in batches] == [2, 1]
    assert set(batches[0]) == {"labeled_image", "label"}
    images = np.concatenate([b["labeled_image"] for b in batches])[..., 0]
    labels = np.concatenate([b["label"] for b in batches])[..., 0]
    for case, image, label in zip(cases, images, labels):
        padded = _centre_pad(case.image, PATCH, 0)
        start = [(s - p) // 2 for s, p in zip(padded.shape, PATCH)]
        expected = padded[tuple(slice(s, s + p) for s, p in zip(start, PATCH))]
        np.testing.assert_array_equal(image, expected)
        np.testing.assert_array_equal(label[image > 0], image[image > 0] % 2)
        assert np.isfinite(image).all()
    with pytest.raises(DataError, match="none given"):
        make_validation_dataset([], PATCH)


# ------------------------------------------------------------------------------------------------ reading


def test_load_cases_reports_every_bad_case(make_la_root):
    ids = ["A", "B", "C", "D"]
    root = make_la_root(ids, missing=("B",))
    bad = f"{root}/2018LA_Seg_Training Set/D/mri_norm2.h5"
    with open(bad, "wb") as fh:
        fh.write(b"garbage")
    layout = open_dataset(root)
    with pytest.raises(DataError) as info:
        load_cases(layout, ids)
    message = str(info.value)
    assert message.startswith("2 of 4 cases could not be read")
    assert "case 'B'" in message and bad in message
    cases = load_cases(layout, ["A", "C"], read_label=False)
    assert [c.case_id for c in cases] == ["A", "C"] and all(c.label is None for c in cases)


@pytest.mark.real_data
def test_real_la_patches(la_root):
    layout = open_dataset(str(la_root))
    labeled = load_cases(layout, layout.read_list("train.list")[:1])
    unlabeled = load_cases(layout, layout.read_list("train.list")[1:2], read_label=False)
    batch = _batches(make_train_dataset(labeled, unlabeled, labeled_bs=1, unlabeled_bs=1, seed=1337), 1)[0]
    assert batch["labeled_image"].shape == (1, 112, 112, 80, 1)
    assert batch["unlabeled_image"].shape == (1, 112, 112, 80, 1)
    assert 0 < batch["label"].mean() < 0.5
    assert -1.0 <= batch["sdm"].min() < 0 < batch["sdm"].max() <= 1.0


def test_intensity_scale_multiplies_images_only_and_keeps_the_reference_draws():
    labeled, unlabeled = _cases_for_repro()
    before = [c.image.copy() for c in labeled + unlabeled]
    plain = _batches(make_train_dataset(labeled, unlabeled, PATCH, seed=5), 3)
    halved = _batches(make_train_dataset(labeled, unlabeled, PATCH, seed=5, intensity_scale=(0.5, 0.5)), 3)
    for p, h in zip(plain, halved):  # same rotations, flips and crops; labels and SDMs untouched
        np.testing.assert_array_equal(h["labeled_image"], p["labeled_image"] * np.float32(0.5))
        np.testing.assert_array_equal(h["unlabeled_image"], p["unlabeled_image"] * np.float32(0.5))
        np.testing.assert_array_equal(h["label"], p["label"])
        np.testing.assert_array_equal(h["sdm"], p["sdm"])
    ranged = _batches(make_train_dataset(labeled, unlabeled, PATCH, seed=5, intensity_scale=(0.3, 1.8)), 3)
    factors = []
    for p, r in zip(plain, ranged):
        for key in ("labeled_image", "unlabeled_image"):
            for patch_p, patch_r in zip(p[key], r[key]):
                nonzero = patch_p != 0
                ratio = patch_r[nonzero] / patch_p[nonzero]
                np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)  # one factor per patch
                factors.append(float(ratio[0]))
    assert 0.3 <= min(factors) and max(factors) <= 1.8 and len(set(np.round(factors, 6))) == len(factors)
    for case, image in zip(labeled + unlabeled, before):
        np.testing.assert_array_equal(case.image, image)  # the cached volumes are never scaled in place


@pytest.mark.parametrize("scale", [(0.0, 1.0), (2.0, 1.0), (1.0,), "x"])
def test_bad_intensity_scale_is_named(scale):
    labeled, unlabeled = _cases_for_repro()
    with pytest.raises(DataError, match="intensity_scale"):
        make_train_dataset(labeled, unlabeled, PATCH, intensity_scale=scale)
