"""Sliding-window stitching is exact: trivial predictors, a plain numpy re-implementation of the reference loop."""

import math

import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf.inference.sliding_window import (
    GAUSSIAN_FLOOR,
    importance_map,
    keras_predict_fn,
    sliding_window_inference,
    window_starts,
)

PATCH = (16, 16, 8)
STRIDE = (6, 5, 3)


def _logit(p):
    return tf.math.log(p) - tf.math.log1p(-p)


def identity_fn(patches):
    """probability == input (inputs kept in (0, 1)), sdm = x + 1."""
    return {"seg": _logit(patches), "sdm": patches + 1.0}


def double_fn(patches):
    """probability given directly: 2x (values may exceed 1; stitching must not care), sdm = 2x."""
    return {"probability": 2.0 * patches, "sdm": 2.0 * patches}


def context_fn(patches):
    """Output depends on the whole window (its mean and a corner voxel): overlapping windows disagree."""
    mean = tf.reduce_mean(patches, axis=[1, 2, 3, 4], keepdims=True)
    corner = patches[:, :1, :1, :1, :]
    return {"seg": 3.0 * (patches - mean) + corner, "sdm": tf.tanh(patches * mean - corner)}


def numpy_reference(image, predict_fn, patch, stride, weights=None):
    """The reference evaluation loop, written plainly: pad, windows flush with the edge, average, crop."""
    w, h, d = image.shape
    pads = [max(p - s, 0) for p, s in zip(patch, image.shape)]
    before = [p // 2 for p in pads]
    padded = np.pad(image, [(b, p - b) for b, p in zip(before, pads)], mode="constant")
    ww, hh, dd = padded.shape
    if weights is None:
        weights = np.ones(patch, np.float64)
    score = np.zeros(padded.shape)
    sdm = np.zeros(padded.shape)
    count = np.zeros(padded.shape)
    sx = math.ceil((ww - patch[0]) / stride[0]) + 1
    sy = math.ceil((hh - patch[1]) / stride[1]) + 1
    sz = math.ceil((dd - patch[2]) / stride[2]) + 1
    for x in range(sx):
        xs = min(stride[0] * x, ww - patch[0])
        for y in range(sy):
            ys = min(stride[1] * y, hh - patch[1])
            for z in range(sz):
                zs = min(stride[2] * z, dd - patch[2])
                window = padded[xs : xs + patch[0], ys : ys + patch[1], zs : zs + patch[2]]
                out = predict_fn(tf.constant(window[None, ..., None], tf.float32))
                if "probability" in out:
                    prob = out["probability"].numpy()[0, ..., 0]
                else:
                    prob = 1.0 / (1.0 + np.exp(-out["seg"].numpy()[0, ..., 0].astype(np.float64)))
                region = (slice(xs, xs + patch[0]), slice(ys, ys + patch[1]), slice(zs, zs + patch[2]))
                score[region] += weights * prob
                sdm[region] += weights * out["sdm"].numpy()[0, ..., 0]
                count[region] += weights
    crop = tuple(slice(b, b + s) for b, s in zip(before, (w, h, d)))
    return (score / count)[crop], (sdm / count)[crop]


def _volume(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.02, 0.98, size=shape).astype(np.float32)


SHAPES = [
    (16, 16, 8),  # exactly one patch
    (30, 27, 20),  # non-multiples of the stride
    (10, 40, 5),  # smaller than the patch on two axes (odd padding on the last)
    (7, 9, 3),  # smaller on every axis
]


def test_window_count_for_a_typical_la_volume():
    counts = [len(window_starts(s, p, st)) for s, p, st in zip((190, 138, 88), (112, 112, 80), (18, 18, 4))]
    expected = [math.ceil((s - p) / st) + 1 for s, p, st in zip((190, 138, 88), (112, 112, 80), (18, 18, 4))]
    assert counts == expected == [6, 3, 3]  # 54 windows ("about 56 per test volume")
    np.testing.assert_array_equal(window_starts(190, 112, 18), [0, 18, 36, 54, 72, 78])
    np.testing.assert_array_equal(window_starts(88, 80, 4), [0, 4, 8])
    np.testing.assert_array_equal(window_starts(112, 112, 18), [0])
    np.testing.assert_array_equal(window_starts(100, 112, 18), [0])  # padded up to the patch


def test_window_count_matches_predict_calls():
    seen = []

    def counting_fn(patches):
        seen.append(int(patches.shape[0]))
        return identity_fn(patches)

    shape = (40, 23, 13)
    sliding_window_inference(_volume(shape), counting_fn, PATCH, STRIDE, batch_size=4)
    n = np.prod([len(window_starts(s, p, st)) for s, p, st in zip(shape, PATCH, STRIDE)])
    assert n == 5 * 3 * 3
    assert sum(seen) == n
    assert seen == [4] * (n // 4) + [n % 4]  # batches of 4, the last one smaller, no repeated windows


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("gaussian", [False, True])
def test_trivial_predictors_are_reproduced_exactly(shape, batch_size, gaussian):
    x = _volume(shape, seed=len(shape) + shape[0])
    out = sliding_window_inference(x, identity_fn, PATCH, STRIDE, batch_size=batch_size, gaussian=gaussian)
    assert out["probability"].shape == shape and out["label"].shape == shape and out["sdm"].shape == shape
    assert out["probability"].dtype == tf.float32 and out["sdm"].dtype == tf.float32
    assert out["label"].dtype == tf.uint8
    np.testing.assert_allclose(out["probability"].numpy(), x, atol=2e-6)
    np.testing.assert_allclose(out["sdm"].numpy(), x + 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["label"].numpy(), (x > 0.5).astype(np.uint8))

    out = sliding_window_inference(x, double_fn, PATCH, STRIDE, batch_size=batch_size, gaussian=gaussian)
    np.testing.assert_allclose(out["probability"].numpy(), 2.0 * x, rtol=1e-5)
    np.testing.assert_allclose(out["sdm"].numpy(), 2.0 * x, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gaussian", [False, True])
def test_matches_numpy_reference_loop(shape, gaussian):
    x = _volume(shape, seed=7)
    out = sliding_window_inference(x, context_fn, PATCH, STRIDE, batch_size=3, gaussian=gaussian)
    weights = importance_map(PATCH, gaussian).astype(np.float64)
    prob, sdm = numpy_reference(x, context_fn, PATCH, STRIDE, weights)
    np.testing.assert_allclose(out["probability"].numpy(), prob, atol=1e-5)
    np.testing.assert_allclose(out["sdm"].numpy(), sdm, atol=1e-5)


def test_gaussian_changes_the_average_when_windows_disagree():
    x = _volume((30, 27, 20), seed=3)
    plain = sliding_window_inference(x, context_fn, PATCH, STRIDE, gaussian=False)["probability"].numpy()
    weighted = sliding_window_inference(x, context_fn, PATCH, STRIDE, gaussian=True)["probability"].numpy()
    assert np.abs(plain - weighted).max() > 1e-3


def test_threshold_is_strictly_greater():
    def constant_fn(patches):
        values = tf.where(patches > 0.5, 0.5 + 1e-6, 0.5) * tf.ones_like(patches)
        return {"probability": values, "sdm": tf.zeros_like(patches)}

    x = np.zeros((20, 18, 9), np.float32)
    x[:10] = 1.0
    label = sliding_window_inference(x, constant_fn, PATCH, STRIDE)["label"].numpy()
    assert label[:10].all() and not label[10:].any()
    label = sliding_window_inference(x, constant_fn, PATCH, STRIDE, threshold=0.6)["label"].numpy()
    assert not label.any()


def test_traces_once_for_any_volume_shape():
    traces = []

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="image")])
    def segment(image):
        traces.append(1)
        return sliding_window_inference(image, identity_fn, PATCH, STRIDE, batch_size=2, gaussian=True)

    for shape in [(30, 27, 20), (10, 40, 5), (16, 16, 8)]:
        x = _volume(shape, seed=1)
        out = segment(tf.constant(x))
        assert out["probability"].shape == shape
        np.testing.assert_allclose(out["probability"].numpy(), x, atol=2e-6)
    assert len(traces) == 1
    assert segment.experimental_get_tracing_count() == 1


def test_keras_model_through_keras_predict_fn():
    import keras

    inputs = keras.Input((None, None, None, 1))
    seg = keras.layers.Conv3D(1, 1, kernel_initializer="ones", bias_initializer="zeros")(inputs)
    model = keras.Model(inputs, {"seg": seg, "sdm": keras.layers.Activation("tanh")(seg)})
    x = np.random.default_rng(2).normal(size=(20, 18, 9)).astype(np.float32)
    out = sliding_window_inference(x, keras_predict_fn(model), PATCH, STRIDE, batch_size=2)
    np.testing.assert_allclose(out["probability"].numpy(), 1.0 / (1.0 + np.exp(-x)), atol=1e-6)
    np.testing.assert_allclose(out["sdm"].numpy(), np.tanh(x), atol=1e-6)


def test_importance_map_properties():
    w = importance_map((16, 12, 8), gaussian=True)
    assert w.shape == (16, 12, 8) and w.dtype == np.float32
    assert w.max() <= 1.0 and w.max() > 0.9 and w.min() >= GAUSSIAN_FLOOR
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1], rtol=1e-6)  # symmetric about the centre
    assert w[8, 6, 4] > w[4, 6, 4] > w[2, 6, 4] > w[0, 0, 0] == np.float32(GAUSSIAN_FLOOR)
    np.testing.assert_array_equal(importance_map((4, 4, 4), gaussian=False), np.ones((4, 4, 4)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stride": (0, 4, 4)}, "stride"),
        ({"stride": (4, 4)}, "stride"),
        ({"stride": (4.5, 4, 4)}, "stride"),
        ({"stride": (17, 4, 4)}, "at most the patch size"),
        ({"patch_size": (16, -16, 8)}, "patch_size"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"patch_size": PATCH, "stride": STRIDE, **kwargs}
    with pytest.raises(ValueError, match=message):
        sliding_window_inference(_volume((16, 16, 8)), identity_fn, **args)


def test_bad_volume_and_predict_fn_outputs():
    with pytest.raises(ValueError, match="volume"):
        sliding_window_inference(np.zeros((16, 16), np.float32), identity_fn, PATCH, STRIDE)
    with pytest.raises(ValueError, match="'seg'"):
        sliding_window_inference(_volume((16, 16, 8)), lambda p: {"sdm": p}, PATCH, STRIDE)
    with pytest.raises(ValueError, match="'sdm'"):
        sliding_window_inference(_volume((16, 16, 8)), lambda p: {"seg": p}, PATCH, STRIDE)
    with pytest.raises(ValueError, match="window_starts"):
        window_starts(10, 16, 0)
