"""conv_norm: a convolution + batch norm in training with the bias taken by batch norm, equal to the plain pair."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf.models.conv_norm import conv_norm, convolve
from sassnet_tf.models.fused_batch_norm import FusedBatchNorm

X = np.random.default_rng(1).normal(size=(2, 8, 6, 4, 3)).astype(np.float32)


def _twin(make_conv):
    layers = []
    for _ in range(2):
        conv, norm = make_conv(), FusedBatchNorm(momentum=0.9, epsilon=1e-5)
        y = conv(X)
        norm.build(y.shape)
        layers.append((conv, norm))
    (conv_a, _), (conv_b, _) = layers
    conv_b.set_weights(conv_a.get_weights())
    conv_a.bias.assign(np.array([0.5, -2.0, 1.0, 3.0], np.float32))
    conv_b.bias.assign(conv_a.bias)
    return layers


@pytest.mark.parametrize("make_conv", [
    lambda: keras.layers.Conv3D(4, 3, padding="same"),
    lambda: keras.layers.Conv3D(4, 2, strides=2, padding="valid"),
    lambda: keras.layers.Conv3DTranspose(4, 2, strides=2, padding="valid"),
], ids=["conv3x3x3", "down", "up"])
def test_training_pair_equals_conv_then_batch_norm(make_conv):
    (conv, norm), (conv_ref, norm_ref) = _twin(make_conv)
    x = tf.constant(X)
    with tf.GradientTape(persistent=True) as tape:
        y = conv_norm(conv, norm, x, training=True)
        y_ref = norm_ref(conv_ref(x), training=True)
        loss, loss_ref = tf.reduce_sum(tf.nn.relu(y) ** 2), tf.reduce_sum(tf.nn.relu(y_ref) ** 2)
    np.testing.assert_allclose(y, y_ref, atol=1e-4)
    for got, want in zip(tape.gradient(loss, [conv.kernel, norm.gamma, norm.beta]),
                         tape.gradient(loss_ref, [conv_ref.kernel, norm_ref.gamma, norm_ref.beta])):
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())  # float32 sums of ~1e3 terms
    bias_grad = tape.gradient(loss, conv.bias)
    assert bias_grad is not None and np.all(bias_grad.numpy() == 0.0)  # zero, not None: weight decay still applies
    np.testing.assert_allclose(norm.moving_mean, norm_ref.moving_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.moving_variance, norm_ref.moving_variance, rtol=1e-5)
    # Inference: the bias is added as usual.
    np.testing.assert_allclose(conv_norm(conv, norm, x, training=False), norm_ref(conv_ref(x), training=False),
                               atol=1e-4)


def test_without_norm_or_bias_it_is_the_convolution():
    conv = keras.layers.Conv3D(4, 3, padding="same")
    np.testing.assert_allclose(conv_norm(conv, None, X, training=True), conv(X), atol=1e-6)
    np.testing.assert_allclose(convolve(conv, X, use_bias=False) + conv.bias, conv(X), atol=1e-5)


@pytest.mark.parametrize("make_conv", [
    lambda: keras.layers.Conv3D(4, 3, padding="same"),
    lambda: keras.layers.Conv3D(4, 2, strides=2, padding="valid"),
    lambda: keras.layers.Conv3DTranspose(4, 2, strides=2, padding="valid"),
], ids=["conv3x3x3", "down", "up"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_float32_filter_gradient_path_equals_the_layer(make_conv, use_bias, monkeypatch):
    """The path large bf16 activations take on AVX512-BF16 CPUs without AMX, forced here on any CPU in float32:
    value, input gradient and kernel gradient equal the layer's own convolution."""
    import sassnet_tf.models.conv_norm as conv_norm_module

    conv = make_conv()
    x = tf.constant(X)
    conv(x)
    w = tf.linspace(-1.0, 1.0, 4)
    results = []
    for forced in (False, True):
        monkeypatch.setattr(conv_norm_module, "slow_bf16_filter_gradient", lambda shape, dtype, f=forced: f)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = convolve(conv, x, use_bias=use_bias)
            loss = tf.reduce_sum(y * w)
        results.append((y, *tape.gradient(loss, [x, conv.kernel])))
    assert results[1][0].shape == results[0][0].shape and results[1][0].shape.is_fully_defined()
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
