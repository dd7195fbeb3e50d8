"""export_saved_model: the version folder's layout, the warm-up file, version numbering and refusals."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from sassnet_tf.export import ExportError, export_saved_model, existing_versions, next_version
from sassnet_tf.export.saved_model import ASSETS_EXTRA, METADATA_FILE, WARMUP_FILE


def test_version_folder_holds_the_saved_model_and_its_extras(float_export):
    path, config = float_export.path, float_export.config
    assert os.path.basename(path) == "1"
    for name in ("saved_model.pb", os.path.join("variables", "variables.index"),
                 os.path.join(ASSETS_EXTRA, WARMUP_FILE), os.path.join(ASSETS_EXTRA, METADATA_FILE)):
        assert os.path.isfile(os.path.join(path, name)), name
    with open(os.path.join(path, ASSETS_EXTRA, METADATA_FILE), encoding="utf-8") as fh:
        meta = json.load(fh)
    assert meta["patch_size"] == list(config.data.patch_size)
    assert meta["stride"] == list(config.eval.stride) and meta["batch_size"] == config.eval.batch_size
    assert meta["preprocessing"] == {"normalize": "zscore", "downsample": config.data.downsample}
    assert meta["config"]["train"]["precision"] == "float32" and meta["dtype_policy"] == "float32"


def test_warmup_file_is_a_tfrecord_of_prediction_logs(float_export):
    path, config = float_export.path, float_export.config
    records = list(tf.data.TFRecordDataset(os.path.join(path, ASSETS_EXTRA, WARMUP_FILE)).as_numpy_iterator())
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "predict_log"]
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request for log in logs}
    assert set(requests) == {"serving_default", "segment_patches"}
    assert all(r.model_spec.name == "sassnet" for r in requests.values())
    ph, pw, pd = config.data.patch_size
    batch, stride_z = config.eval.batch_size, config.eval.stride[2]
    image = tf.make_ndarray(requests["serving_default"].inputs["image"])
    patches = tf.make_ndarray(requests["segment_patches"].inputs["patches"])
    # One full forward batch of windows along the last axis; zeros throughout.
    assert image.shape == (ph, pw, pd + (batch - 1) * stride_z) and image.dtype == np.float32
    assert patches.shape == (batch, ph, pw, pd, 1) and not image.any() and not patches.any()
    assert os.path.getsize(os.path.join(path, ASSETS_EXTRA, WARMUP_FILE)) < 2000  # values stored once


def test_version_numbers_follow_the_numeric_folders(tmp_path):
    base = tmp_path / "sassnet"
    assert existing_versions(str(base)) == [] and next_version(str(base)) == 1
    for name in ("1", "7", "10", ".11.abc.tmp", "latest", "3x"):
        (base / name).mkdir(parents=True)
    (base / "12").write_text("a file, not a version")
    assert existing_versions(str(base)) == [1, 7, 10] and next_version(str(base)) == 11


def test_existing_versions_are_never_overwritten(float_export, export_settings):
    path, vnet, config = float_export.path, float_export.vnet, float_export.config
    base = os.path.dirname(path)
    before = os.path.getmtime(os.path.join(path, "saved_model.pb"))
    with pytest.raises(ExportError, match="version 1 already exists; refusing to overwrite"):
        export_saved_model(vnet, base, 1, **export_settings(config))
    assert os.path.getmtime(os.path.join(path, "saved_model.pb")) == before
    # Only complete versions beside each other: no temporary folder was left by the export.
    assert os.listdir(base) == ["1"]


@pytest.mark.parametrize("version", [0, -3, 1.5, True, "2"])
def test_bad_version_numbers_are_refused(float_export, export_settings, tmp_path, version):
    vnet, config = float_export.vnet, float_export.config
    with pytest.raises(ExportError, match="positive integer"):
        export_saved_model(vnet, str(tmp_path / "m"), version, **export_settings(config))


def test_unusable_base_paths_are_refused(float_export, export_settings, tmp_path):
    vnet, config = float_export.vnet, float_export.config
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        export_saved_model(vnet, str(a_file), **export_settings(config))
    with pytest.raises(ExportError, match="cannot create"):
        export_saved_model(vnet, str(a_file / "sassnet"), **export_settings(config))


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    import sassnet_tf.export.saved_model as saved_model

    class StubModule:  # stands in for SegmentationModule: the failure, not the tracing, is under test
        def __init__(self, vnet, **settings):
            pass

        def signatures(self):
            return {}

    def half_written_save(module, folder, signatures=None):
        with open(os.path.join(folder, "saved_model.pb"), "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saved_model, "SegmentationModule", StubModule)
    monkeypatch.setattr(tf.saved_model, "save", half_written_save)
    base = tmp_path / "sassnet"
    with pytest.raises(ExportError, match="No space left"):
        saved_model.export_saved_model(None, str(base), patch_size=(32, 32, 16), stride=(16, 16, 8), threshold=0.5,
                                       gaussian=False, batch_size=2, preprocessing=None, config=None)
    assert os.listdir(base) == []


def test_an_export_removes_what_a_killed_export_left_and_keeps_live_ones(tmp_path, monkeypatch):
    import sassnet_tf.export.saved_model as saved_model
    from tests.utils.test_atomic import dead_pid

    class StubModule:  # the version folder's bookkeeping, not the tracing, is under test
        metadata_json = "{}"

        def signatures(self):
            return {}

    monkeypatch.setattr(tf.saved_model, "save", lambda module, folder, signatures=None: open(
        os.path.join(folder, "saved_model.pb"), "wb").close())
    base = tmp_path / "sassnet"
    stale = base / f".1.{dead_pid()}.abcdefgh.tmp"  # SIGKILL while writing version 1
    (stale / "variables").mkdir(parents=True)
    live = base / f".2.{os.getpid()}.hgfedcba.tmp"  # an export writing right now
    live.mkdir()
    path = saved_model.save_module(StubModule(), str(base), warmup=False)
    assert os.path.basename(path) == "1" and existing_versions(str(base)) == [1]
    assert not stale.exists() and live.exists()
