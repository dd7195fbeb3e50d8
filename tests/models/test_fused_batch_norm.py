"""FusedBatchNorm: same outputs and gradients as Keras BatchNormalization, torch's running statistics."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf.models.fused_batch_norm import FusedBatchNorm

X = np.random.default_rng(0).normal(2.0, 3.0, size=(2, 6, 5, 4, 3)).astype(np.float32)


def _layers():
    keras_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    fused = FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    for layer in (keras_bn, fused):
        layer.build(X.shape)
        layer.gamma.assign([1.5, 0.5, 2.0])
        layer.beta.assign([0.1, -0.2, 0.3])
    return keras_bn, fused


def _forward_backward(layer, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y ** 3)
    return y.numpy(), [g.numpy() for g in tape.gradient(loss, [x, layer.gamma, layer.beta])]


def test_training_matches_keras_and_torch_running_statistics():
    keras_bn, fused = _layers()
    y_ref, grads_ref = _forward_backward(keras_bn, X)
    y, grads = _forward_backward(fused, X)
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-3)
    flat = X.reshape(-1, 3).astype(np.float64)
    # torch BatchNorm3d(momentum=0.1): running = 0.9 * running + 0.1 * batch, the variance unbiased.
    np.testing.assert_allclose(fused.moving_mean.numpy(), 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)


def test_inference_and_other_ranks_use_the_keras_path():
    keras_bn, fused = _layers()
    np.testing.assert_allclose(fused(X, training=False), keras_bn(X, training=False), atol=1e-6)
    flat = FusedBatchNorm()
    y = flat(X.reshape(-1, 3), training=True).numpy()  # rank 2: the Keras implementation
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)


def test_gradients_never_reach_moving_statistics_and_frozen_layer_is_inference():
    _, fused = _layers()
    fused.trainable = False
    y = fused(X, training=True).numpy()  # frozen: normalises with the moving statistics (mean 0, variance 1)
    np.testing.assert_allclose(y, X / np.sqrt(1 + 1e-5) * [1.5, 0.5, 2.0] + [0.1, -0.2, 0.3], rtol=1e-5, atol=1e-5)
    assert np.all(fused.moving_mean.numpy() == 0.0)


@pytest.mark.parametrize("policy_name", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_outputs_compute_dtype(policy, policy_name):
    policy(policy_name)
    layer = FusedBatchNorm()
    y = layer(tf.cast(X, layer.compute_dtype), training=True)
    assert y.dtype == layer.compute_dtype
    assert layer.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy().mean(axis=(0, 1, 2, 3)), 0.0, atol=0.05)


def test_config_round_trip():
    layer = FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is FusedBatchNorm and clone.momentum == 0.9 and clone.epsilon == 1e-5


def test_conv_bias_is_absorbed_exactly_with_zero_gradient():
    """bn(x, conv_bias=b) == bn(x + b): outputs, moving statistics, gradients; b's gradient is exactly zero."""
    _, absorbed = _layers()
    _, added = _layers()
    b = tf.Variable([0.7, -1.2, 3.0])
    x = tf.constant(X)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        assert absorbed.absorbs_conv_bias(x, training=True) and not absorbed.absorbs_conv_bias(x, training=False)
        y = absorbed.normalize_with_conv_bias(x, b)
        y_ref = added(x + b, training=True)
        loss, loss_ref = tf.reduce_sum(y ** 3), tf.reduce_sum(y_ref ** 3)
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    for got, want in zip(tape.gradient(loss, [x, absorbed.gamma, absorbed.beta]),
                         tape.gradient(loss_ref, [x, added.gamma, added.beta])):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(tape.gradient(loss, b), 0.0)
    assert np.abs(tape.gradient(loss_ref, b)).max() < 1e-2  # the true gradient, up to rounding
    np.testing.assert_allclose(absorbed.moving_mean, added.moving_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(absorbed.moving_variance, added.moving_variance, rtol=1e-5)
    np.testing.assert_allclose(absorbed(x + b, training=False), added(x + b, training=False), atol=1e-5)


def test_bfloat16_graph_matches_float32():
    """Under mixed_bfloat16 the fused kernel takes the bf16 activation itself (4D, oneDNN's kernel inside a
    tf.function): same result as float32 up to bf16 rounding."""
    results = []
    for dtype in ("float32", "mixed_bfloat16"):
        layer = FusedBatchNorm(momentum=0.9, epsilon=1e-5, dtype=dtype)
        layer.build(X.shape)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.cast(layer(tf.cast(x, layer.compute_dtype), training=True), tf.float32)
                loss = tf.reduce_sum(y * tf.range(3, dtype=tf.float32))
            return y, tape.gradient(loss, [x, layer.gamma, layer.beta])

        y, grads = step(tf.constant(X))
        results.append((y.numpy(), [g.numpy() for g in grads], layer.moving_variance.numpy()))
    (y32, g32, v32), (y16, g16, v16) = results
    np.testing.assert_allclose(y16, y32, atol=0.05)
    for a, b in zip(g16, g32):
        np.testing.assert_allclose(a, b, rtol=0.02, atol=0.02)
    np.testing.assert_allclose(v16, v32, rtol=0.01)
