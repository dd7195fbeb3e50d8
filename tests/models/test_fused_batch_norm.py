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
