"""Tiny SavedModels with the export contract's signatures (DESIGN.md "SavedModel (export)"), and a local server."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import tensorflow as tf

PATCH = (16, 16, 16)  # a V-Net patch: multiples of 16 (InferenceSettings)


def toy_metadata(downsample: int = 1, threshold: float = 0.5) -> dict:
    return {
        "patch_size": list(PATCH),
        "stride": [8, 8, 8],
        "threshold": threshold,
        "gaussian": False,
        "preprocessing": {"normalize": "zscore", "downsample": downsample},
        "model": {"n_filters": 2},
        "sassnet_tf_version": "test",
    }


class ToySegmenter(tf.Module):
    """probability = sigmoid(scale * image), label = probability > threshold, sdm = tanh(image)."""

    def __init__(self, scale: float, metadata: dict):
        super().__init__()
        self.scale = tf.Variable(scale, dtype=tf.float32)
        self.threshold = float(metadata["threshold"])
        self.metadata_json = json.dumps(metadata)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="image")])
    def serve(self, image):
        probability = tf.sigmoid(self.scale * image)
        return {
            "probability": probability,
            "label": tf.cast(probability > self.threshold, tf.uint8),
            "sdm": tf.tanh(image),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, *PATCH, 1], tf.float32, name="patches")])
    def segment_patches(self, patches):
        return {"probability": tf.sigmoid(self.scale * patches), "sdm": tf.tanh(patches)}

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="format")])
    def metadata(self, format):  # noqa: A002 (the contract's input name)
        tf.debugging.assert_equal(format, tf.constant("json"), message="format must be 'json'")
        return {"json": tf.constant(self.metadata_json)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="values")])
    def checked(self, values):
        # A signature that fails at run time for values >= 100: TensorFlow's InvalidArgumentError, which the server
        # answers as INVALID_ARGUMENT (as TensorFlow Serving does) and keeps serving.
        tf.debugging.assert_less(values, tf.constant(100.0), message="values must stay below 100")
        return {"doubled": 2.0 * values}


def save_toy_model(path: str, scale: float = 1.0, downsample: int = 1, threshold: float = 0.5) -> str:
    module = ToySegmenter(scale, toy_metadata(downsample, threshold))
    tf.saved_model.save(
        module,
        path,
        signatures={
            "serving_default": module.serve,
            "segment_patches": module.segment_patches,
            "metadata": module.metadata,
            "checked": module.checked,
        },
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sigmoid(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-scale * x.astype(np.float64)))


def labels_match(label: np.ndarray, image: np.ndarray, scale: float = 1.0, threshold: float = 0.5) -> bool:
    """label == sigmoid(scale * image) > threshold, ignoring voxels within float32 rounding of the threshold."""
    probability = sigmoid(image, scale)
    decided = np.abs(probability - threshold) > 1e-6
    return bool(np.array_equal(label[decided], (probability[decided] > threshold).astype(label.dtype)))


@pytest.fixture(scope="session")
def toy_v1_source(tmp_path_factory) -> str:
    """A saved version-1 model, copied into per-test base paths (saving costs ~1 s)."""
    return save_toy_model(str(tmp_path_factory.mktemp("toy_src") / "v1"), scale=1.0)


@pytest.fixture(scope="session")
def toy_v2_source(tmp_path_factory) -> str:
    return save_toy_model(str(tmp_path_factory.mktemp("toy_src") / "v2"), scale=2.0)


@pytest.fixture(scope="module")
def toy_base(tmp_path_factory, toy_v1_source) -> str:
    import shutil

    base = tmp_path_factory.mktemp("models") / "sassnet"
    shutil.copytree(toy_v1_source, base / "1")
    return str(base)


@pytest.fixture(scope="module")
def server(toy_base):
    from sassnet_tf.serving.server import LocalModelServer

    srv = LocalModelServer(toy_base, port=0, rest_port=0, poll_seconds=0, max_message_mb=1, workers=4)
    srv.start()
    yield srv
    srv.stop(grace_seconds=1.0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
