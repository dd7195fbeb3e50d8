"""The exported SavedModel runs the way tensorflow_model_server runs it: TF1 Session, serve tag, tensor names.

A fresh Python process (tf1_serving_load.py) that never imports sassnet_tf loads the float32 and the mixed_bfloat16
exports with ``tf.compat.v1.saved_model.loader.load``, reads their SignatureDefs, feeds and fetches by tensor name and
replays the warm-up file; its outputs must match the in-memory SegmentationModule.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from sassnet_tf.export.saved_model import ASSETS_EXTRA, METADATA_FILE

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]

CONTRACT = {
    "serving_default": {
        "inputs": {"image": ("DT_FLOAT", [-1, -1, -1])},
        "outputs": {"probability": ("DT_FLOAT", [-1, -1, -1]), "label": ("DT_UINT8", [-1, -1, -1]),
                    "sdm": ("DT_FLOAT", [-1, -1, -1])},
    },
    "segment_patches": {
        "inputs": {"patches": ("DT_FLOAT", [-1, 32, 32, 16, 1])},
        "outputs": {"probability": ("DT_FLOAT", [-1, 32, 32, 16, 1]), "sdm": ("DT_FLOAT", [-1, 32, 32, 16, 1])},
    },
    "metadata": {"inputs": {"format": ("DT_STRING", [])}, "outputs": {"json": ("DT_STRING", [])}},
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    rng = np.random.default_rng(11)
    arrays = {
        "image": rng.normal(size=(40, 36, 24)).astype(np.float32),
        "image_small": rng.normal(size=(20, 20, 10)).astype(np.float32),  # smaller than the patch on every axis
        "patches": rng.normal(size=(3, 32, 32, 16, 1)).astype(np.float32),
    }
    path = tmp_path_factory.mktemp("tf1") / "inputs.npz"
    np.savez(path, **arrays)
    return str(path), arrays


@pytest.fixture(scope="module")
def served(inputs, float_export, bf16_export, tmp_path_factory):
    """Run the TF1 loader once over both exports; return [(npz arrays, report json)] in that order."""
    out_dir = tmp_path_factory.mktemp("tf1_out")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))  # sassnet_tf importable, never needed
    result = subprocess.run(
        [sys.executable, str(HERE / "tf1_serving_load.py"), inputs[0], str(out_dir), float_export.path,
         bf16_export.path],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = []
    for i in range(2):
        with open(out_dir / f"{i}.json", encoding="utf-8") as fh:
            runs.append((dict(np.load(out_dir / f"{i}.npz")), json.load(fh)))
    return runs


def in_memory(module, arrays):
    """The in-memory module's outputs under the keys the TF1 loader writes."""
    out = {}
    for key in ("image", "image_small"):
        for name, value in module.serving_default(image=arrays[key]).items():
            out[f"serving_default/{key}/{name}"] = value.numpy()
    for name, value in module.segment_patches(patches=arrays["patches"]).items():
        out[f"segment_patches/{name}"] = value.numpy()
    return out


@pytest.mark.parametrize("index", [0, 1], ids=["float32", "mixed_bfloat16"])
def test_signature_defs_follow_the_contract(served, index):
    report = served[index][1]
    signatures = {k: v for k, v in report["signatures"].items() if not k.startswith("__")}
    assert set(signatures) == set(CONTRACT)
    for name, expected in CONTRACT.items():
        sig = signatures[name]
        assert sig["method_name"] == "tensorflow/serving/predict"
        for side in ("inputs", "outputs"):
            got = {k: (v["dtype"], v["shape"]) for k, v in sig[side].items()}
            assert got == expected[side], (name, side)
    assert report["signatures"]["serving_default"]["inputs"]["image"]["name"] == "serving_default_image:0"


@pytest.mark.parametrize("index", [0, 1], ids=["float32", "mixed_bfloat16"])
def test_the_serving_process_never_imports_sassnet_tf(served, index):
    assert served[index][1]["sassnet_tf_modules"] == []


@pytest.mark.parametrize(
    "index, atol", [(0, 1e-5), (1, 2e-2)], ids=["float32", "mixed_bfloat16"]
)
def test_tf1_outputs_match_the_in_memory_module(served, inputs, float_export, bf16_export, index, atol):
    arrays, _ = served[index]
    expected = in_memory((float_export, bf16_export)[index].module, inputs[1])
    assert sorted(arrays) == sorted(expected)
    for key, value in expected.items():
        got = arrays[key]
        assert got.dtype == value.dtype and got.shape == value.shape, key
        if key.endswith("/label"):
            probability = expected[key.replace("/label", "/probability")]
            decided = np.abs(probability - 0.5) > atol  # labels may differ only where the probability is ~0.5
            np.testing.assert_array_equal(got[decided], value[decided], err_msg=key)
        else:
            np.testing.assert_allclose(got, value, atol=atol, err_msg=key)
    assert arrays["serving_default/image_small/label"].shape == (20, 20, 10)


@pytest.mark.parametrize("index", [0, 1], ids=["float32", "mixed_bfloat16"])
def test_metadata_over_tf1_equals_the_metadata_file(served, float_export, bf16_export, index):
    path = (float_export, bf16_export)[index].path
    with open(os.path.join(path, ASSETS_EXTRA, METADATA_FILE), encoding="utf-8") as fh:
        from_file = json.load(fh)
    assert json.loads(served[index][1]["metadata_json"]) == from_file
    assert from_file["dtype_policy"] == ("float32", "mixed_bfloat16")[index]


@pytest.mark.parametrize("index", [0, 1], ids=["float32", "mixed_bfloat16"])
def test_warmup_requests_replay_through_the_session(served, index):
    warmup = served[index][1]["warmup"]
    assert [w["signature"] for w in warmup] == ["serving_default", "segment_patches"]
    assert warmup[0]["inputs"] == {"image": [32, 32, 24]}
    assert warmup[0]["outputs"] == {"label": ["uint8", [32, 32, 24]], "probability": ["float32", [32, 32, 24]],
                                    "sdm": ["float32", [32, 32, 24]]}
    assert warmup[1]["outputs"]["probability"] == ["float32", [2, 32, 32, 16, 1]]
