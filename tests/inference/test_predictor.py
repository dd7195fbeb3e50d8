"""Predictor: a run folder and its exported SavedModel give the same volumes, on the input's grid."""

import numpy as np
import pytest

from sassnet_tf.inference.predictor import ModelLoadError, Predictor, find_saved_model
from tests.inference.tiny_model import make_run_and_export


def test_find_saved_model(tmp_path):
    assert find_saved_model(str(tmp_path)) is None
    for version in ("1", "3", "12"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    (tmp_path / "20").mkdir()  # no saved_model.pb: not a version
    assert find_saved_model(str(tmp_path)) == str(tmp_path / "12")
    assert find_saved_model(str(tmp_path / "3")) == str(tmp_path / "3")


@pytest.fixture(scope="module")
def run_and_export(tmp_path_factory):
    """A tiny run (V-Net n_filters 2, patch 32x32x16, downsample 2) with random weights, and its export."""
    return make_run_and_export(str(tmp_path_factory.mktemp("predictor")))


def test_run_folder_and_saved_model_give_the_same_volumes(run_and_export):
    run, base = run_and_export
    volume = np.random.default_rng(0).normal(size=(70, 50, 37)).astype(np.float32)
    affine = np.diag([0.6, 0.6, 0.6, 1.0])
    from_run = Predictor.from_path(run).predict(volume, affine)
    from_export = Predictor.from_path(base).predict(volume)
    assert Predictor.from_path(base).settings == Predictor.from_path(run).settings
    for key in ("probability", "label", "sdm"):
        assert from_run[key].shape == volume.shape  # back on the input's grid (odd sizes, downsample 2)
        np.testing.assert_allclose(from_run[key], from_export[key], atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(from_run["label"], from_run["probability"] > 0.5)
    np.testing.assert_array_equal(from_run["affine"], affine)


def test_bad_models_and_volumes_are_clear_errors(run_and_export, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        Predictor.from_path(str(tmp_path / "nothing"))
    with pytest.raises(ModelLoadError, match="neither a run folder"):
        Predictor.from_path(str(tmp_path))
    with pytest.raises(ValueError, match="non-empty 3-D"):
        Predictor.from_path(run_and_export[0]).predict(np.zeros((0, 4, 4)))


def _voxelwise_predictor(downsample=1):
    """A Predictor whose 'network' is a per-voxel threshold (image > 1): any tiling gives the same answer."""
    import tensorflow as tf

    from sassnet_tf.inference.settings import InferenceSettings

    def predict_fn(patches):
        return {"probability": tf.sigmoid(8.0 * (patches - 1.0)), "sdm": tf.tanh(patches)}

    settings = InferenceSettings((16, 16, 16), (8, 8, 8), batch_size=4, downsample=downsample)
    return Predictor(lambda: predict_fn, settings, {"kind": "test"})


def _ball(shape, centre, radius):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return ((grid - np.array(centre)) ** 2).sum(-1) <= radius ** 2


def test_whole_scan_mode_segments_around_the_largest_structure_only():
    shape = (96, 80, 40)
    atrium, distractor = _ball(shape, (60, 30, 20), 9), _ball(shape, (10, 70, 8), 3)
    volume = np.where(atrium | distractor, 3.0, 0.0).astype(np.float32)
    predictor = _voxelwise_predictor()
    full = predictor.predict(volume)
    assert full["label"][distractor].all() and full["label"][atrium].all()  # the plain pass finds both
    whole = predictor.predict_whole_scan(volume, affine=np.eye(4), margin=4)
    box = tuple(slice(a, b) for a, b in whole["box"])
    assert whole["box"] == [(51 - 4, 70 + 4), (21 - 4, 40 + 4), (11 - 4, 30 + 4)]
    np.testing.assert_array_equal(whole["label"], atrium.astype(np.uint8))  # the distractor is outside the box
    np.testing.assert_allclose(whole["probability"][box], full["probability"][box], atol=1e-6)
    assert (whole["sdm"][~np.pad(np.ones([b - a for a, b in whole["box"]], bool),
                                [(a, n - b) for (a, b), n in zip(whole["box"], shape)])] == 1.0).all()
    # nothing found by the coarse pass: the normal pass over everything
    empty = predictor.predict_whole_scan(np.zeros((40, 40, 20), np.float32))
    assert empty["box"] == [(0, 40), (0, 40), (0, 20)] and not empty["label"].any()


def test_whole_scan_mode_finds_the_thick_structure_not_a_larger_thin_one():
    """A bright fat layer around the body outnumbers the atrium's voxels: "deepest" boxes the atrium, "largest" the
    layer (the whole field); the coarse pass on the model's grid (downsample 2) maps back to the input's."""
    shape = (120, 112, 32)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    r = np.sqrt(((grid[..., :2] - [60, 56]) ** 2).sum(-1))
    layer = (r > 50) & (r <= 54)
    atrium = _ball(shape, (70, 50, 16), 8)
    assert layer.sum() > 3 * atrium.sum()
    volume = np.where(layer | atrium, 3.0, 0.0).astype(np.float32)
    predictor = _voxelwise_predictor(downsample=2)
    whole = predictor.predict_whole_scan(volume, margin=4)
    (x0, x1), (y0, y1), _ = whole["box"]
    # the atrium's box + margin, within one voxel of the downsampled grid (its partial-volume edge is not confident)
    assert abs(x0 - (62 - 4)) <= 2 and abs(x1 - (78 + 1 + 4)) <= 2
    assert abs(y0 - (42 - 4)) <= 2 and abs(y1 - (58 + 1 + 4)) <= 2
    assert whole["label"][atrium].mean() > 0.95 and not whole["label"][layer].any()
    largest = predictor.predict_whole_scan(volume, margin=4, component="largest")
    assert largest["label"][layer].mean() > 0.9
    with pytest.raises(ValueError, match="component"):
        predictor.predict_whole_scan(volume, component="biggest")
    with pytest.raises(ValueError, match="coarse_threshold"):
        predictor.predict_whole_scan(volume, coarse_threshold=1.0)
