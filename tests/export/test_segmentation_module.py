"""SegmentationModule in memory: the contract's outputs, one graph for every shape, dropout off, dtype policy kept."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf.export import ExportError, SegmentationModule
from sassnet_tf.inference.sliding_window import keras_predict_fn, sliding_window_inference
from sassnet_tf.models import build_vnet

PATCH = (32, 32, 16)
STRIDE = (16, 16, 8)
BATCH = 2


@pytest.fixture(scope="module")
def vnet():
    keras.utils.set_random_seed(3)
    return build_vnet(n_filters=2)


@pytest.fixture(scope="module")
def module(vnet):
    return SegmentationModule(
        vnet, patch_size=PATCH, stride=STRIDE, threshold=0.5, gaussian=False, batch_size=BATCH,
        preprocessing={"normalize": "zscore", "downsample": 2}, config={"model": {"n_filters": 2}, "eval": {}},
    )


def volume(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(40, 36, 24), (20, 20, 10)], ids=["larger", "smaller-than-patch"])
def test_serving_default_outputs_follow_the_contract(module, shape):
    out = module.serving_default(image=volume(shape))
    assert sorted(out) == ["label", "probability", "sdm"]
    assert out["probability"].dtype == tf.float32 and out["sdm"].dtype == tf.float32
    assert out["label"].dtype == tf.uint8
    for value in out.values():
        assert tuple(value.shape) == shape
    probability = out["probability"].numpy()
    assert 0.0 <= probability.min() and probability.max() <= 1.0
    np.testing.assert_array_equal(out["label"].numpy(), (probability > 0.5).astype(np.uint8))


def test_one_graph_serves_every_volume_shape(module):
    for i, shape in enumerate([(40, 36, 24), (33, 47, 17), (8, 9, 5)]):
        module.serving_default(image=volume(shape, seed=i))
    assert module.serving_default.experimental_get_tracing_count() == 1


def test_serving_default_equals_the_sliding_window_over_the_network(module, vnet):
    image = volume((40, 36, 24), seed=4)
    expected = sliding_window_inference(image, keras_predict_fn(vnet), patch_size=PATCH, stride=STRIDE,
                                        batch_size=BATCH, gaussian=False, threshold=0.5)
    out = module.serving_default(image=image)
    np.testing.assert_allclose(out["probability"].numpy(), expected["probability"].numpy(), atol=1e-6)
    np.testing.assert_allclose(out["sdm"].numpy(), expected["sdm"].numpy(), atol=1e-6)


def test_inference_runs_without_dropout(module):
    # The V-Net has dropout 0.5; with training=True two calls would differ.
    image = volume((32, 32, 16), seed=5)
    first = module.serving_default(image=image)["probability"].numpy()
    second = module.serving_default(image=image)["probability"].numpy()
    np.testing.assert_array_equal(first, second)


def test_segment_patches_is_one_forward_pass(module, vnet):
    patches = volume((3, *PATCH, 1), seed=6)
    out = module.segment_patches(patches=patches)
    ref = vnet(patches, training=False)
    assert sorted(out) == ["probability", "sdm"]
    assert out["probability"].dtype == tf.float32 and tuple(out["probability"].shape) == (3, *PATCH, 1)
    np.testing.assert_allclose(out["probability"].numpy(), tf.sigmoid(ref["seg"]).numpy(), atol=1e-6)
    np.testing.assert_allclose(out["sdm"].numpy(), ref["sdm"].numpy(), atol=1e-6)


def test_metadata_signature_returns_the_settings_as_json(module):
    raw = module.metadata(format=tf.constant("json"))["json"].numpy().decode("utf-8")
    meta = json.loads(raw)
    assert raw == module.metadata_json
    assert meta["patch_size"] == list(PATCH) and meta["stride"] == list(STRIDE)
    assert meta["threshold"] == 0.5 and meta["gaussian"] is False and meta["batch_size"] == BATCH
    assert meta["preprocessing"] == {"normalize": "zscore", "downsample": 2}
    assert meta["model"]["n_filters"] == 2 and meta["dtype_policy"] == "float32"
    assert meta["sassnet_tf_version"] and meta["tensorflow_version"] == tf.__version__
    assert set(meta["signatures"]) == {"serving_default", "segment_patches", "metadata"}


def test_metadata_refuses_other_formats(module):
    with pytest.raises(tf.errors.InvalidArgumentError, match="unsupported format"):
        module.metadata(format=tf.constant("xml"))


def test_bad_images_fail_with_a_named_error(module):
    bad = volume((32, 32, 16))
    bad[3, 4, 5] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="image: contains NaN"):
        module.serving_default(image=bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="every axis"):
        module.serving_default(image=np.zeros((0, 32, 16), np.float32))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"patch_size": (30, 32, 16)}, "multiple of 16"),
        ({"patch_size": (32, 32)}, "three positive integers"),
        ({"stride": (40, 16, 8)}, "at most the patch size"),
        ({"stride": (0, 16, 8)}, "three positive integers"),
        ({"threshold": 1.0}, "threshold"),
        ({"gaussian": "yes"}, "gaussian"),
        ({"batch_size": 0}, "batch_size"),
        ({"preprocessing": {"normalize": "minmax", "downsample": 1}}, "normalize: 'minmax' is not one of zscore"),
        ({"preprocessing": {"normalize": "zscore", "downsample": 0}}, "downsample: expected an integer >= 1"),
        ({"preprocessing": {"normalise": "zscore"}}, "unknown keys"),
        ({"config": object()}, "config"),
    ],
)
def test_bad_settings_are_refused(vnet, change, message):
    kwargs = dict(patch_size=PATCH, stride=STRIDE, threshold=0.5, gaussian=False, batch_size=BATCH)
    kwargs.update(change)
    with pytest.raises(ExportError, match=message):
        SegmentationModule(vnet, **kwargs)


def test_mixed_bfloat16_network_computes_in_bf16_and_answers_float32():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        bf16 = build_vnet(n_filters=2)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    module = SegmentationModule(bf16, patch_size=PATCH, stride=STRIDE, batch_size=BATCH)
    out = module.serving_default(image=volume((36, 32, 16)))
    assert out["probability"].dtype == tf.float32 and out["sdm"].dtype == tf.float32
    assert module.metadata_dict()["dtype_policy"] == "mixed_bfloat16"
    graph = module.segment_patches.get_concrete_function().graph
    conv_types = [op.get_attr("T") for op in graph.get_operations() if op.type == "Conv3D"]
    # Every body convolution in bf16; only the two 1x1x1 heads run in float32 (the model's own choice).
    assert conv_types.count(tf.float32) == 2 and conv_types.count(tf.bfloat16) == len(conv_types) - 2 > 0
