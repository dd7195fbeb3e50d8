"""TensorFlow's own `saved_model_cli` reads the export and runs serving_default on a volume given as a .npy file."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

SAVED_MODEL_CLI = shutil.which("saved_model_cli") or str(pathlib.Path(sys.executable).with_name("saved_model_cli"))


def run_cli(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([SAVED_MODEL_CLI, *args], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def cli_available():
    if not os.access(SAVED_MODEL_CLI, os.X_OK):
        pytest.fail(f"saved_model_cli not found beside {sys.executable}; it ships with tensorflow")


def test_show_all_lists_the_three_signatures(cli_available, float_export, tmp_path):
    result = run_cli("show", "--dir", float_export.path, "--all", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for expected in ("signature_def['serving_default']", "signature_def['segment_patches']",
                     "signature_def['metadata']", "inputs['image']", "inputs['patches']", "inputs['format']",
                     "outputs['label']", "DT_UINT8", "shape: (-1, -1, -1)", "shape: (-1, 32, 32, 16, 1)",
                     "Method name is: tensorflow/serving/predict"):
        assert expected in out, expected


def test_run_serving_default_on_an_npy_volume(cli_available, float_export, tmp_path):
    image = np.random.default_rng(5).normal(size=(20, 20, 10)).astype(np.float32)  # smaller than the patch
    np.save(tmp_path / "scan.npy", image)
    result = run_cli("run", "--dir", float_export.path, "--tag_set", "serve", "--signature_def", "serving_default",
                     "--inputs", f"image={tmp_path / 'scan.npy'}", "--outdir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = float_export.module.serving_default(image=image)
    got = {name: np.load(tmp_path / "out" / f"{name}.npy") for name in ("probability", "label", "sdm")}
    for name, value in got.items():
        assert value.dtype == expected[name].numpy().dtype and value.shape == (20, 20, 10), name
    np.testing.assert_allclose(got["probability"], expected["probability"].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["sdm"], expected["sdm"].numpy(), atol=1e-5)
    decided = np.abs(expected["probability"].numpy() - 0.5) > 1e-5
    np.testing.assert_array_equal(got["label"][decided], expected["label"].numpy()[decided])
