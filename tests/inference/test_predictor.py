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
