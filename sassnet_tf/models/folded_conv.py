"""Inference-time folding of a convolution + BatchNorm + ReLU into one convolution with bias and ReLU.

With the moving statistics fixed, BN is a per-channel affine map, so ``relu(bn(conv(x, k) + b))`` equals
``relu(conv(x, k * s) + (b - mean) * s + beta)`` with ``s = gamma / sqrt(var + eps)``. TensorFlow's graph optimiser
then fuses convolution, bias and ReLU into one oneDNN kernel, removing two passes over every activation (about 10 %
of a V-Net window on the 2-core benchmark CPU, docs/PERFORMANCE.md). Training never folds: BN then needs the batch
statistics.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def can_fold(norm, training) -> bool:
    """Whether `norm` acts as a fixed affine map in this call: a BatchNormalization in inference mode."""
    return (isinstance(norm, keras.layers.BatchNormalization) and not (training and norm.trainable)
            and not norm.renorm and norm.axis in (-1, 4) and keras.backend.backend() == "tensorflow")


def folded_weights(kernel, bias, norm, out_axis: int, dtype):
    """Kernel and bias of ``norm(conv(x))`` as one convolution, computed in float32, returned in `dtype`.

    Args:
        kernel: the convolution kernel variable; its output channels on `out_axis` (4 for Conv3D, 3 for
            Conv3DTranspose's ``[k, k, k, out, in]`` layout).
        bias: the convolution bias variable, or None.
        norm: a keras BatchNormalization over the convolution's output channels.
        out_axis: the kernel axis of the output channels.
        dtype: the compute dtype of the result.
    """
    f32 = tf.float32
    gamma = tf.cast(norm.gamma, f32) if norm.scale else 1.0
    beta = tf.cast(norm.beta, f32) if norm.center else 0.0
    scale = gamma * tf.math.rsqrt(tf.cast(norm.moving_variance, f32) + norm.epsilon)
    shape = [1] * len(kernel.shape)
    shape[out_axis] = -1
    new_kernel = tf.cast(kernel, f32) * tf.reshape(scale, shape)
    new_bias = ((tf.cast(bias, f32) if bias is not None else 0.0) - tf.cast(norm.moving_mean, f32)) * scale + beta
    return tf.cast(new_kernel, dtype), tf.cast(new_bias, dtype)


def conv3d_bn_relu(inputs, conv, norm):
    """``relu(norm(conv(inputs)))`` for a keras Conv3D `conv` and an inference-mode BN, as one fused convolution.

    Strides and padding are the layer's own (Keras "same"/"valid" are TensorFlow's "SAME"/"VALID").
    """
    kernel, bias = folded_weights(conv.kernel, conv.bias if conv.use_bias else None, norm, 4, conv.compute_dtype)
    x = tf.nn.conv3d(tf.cast(inputs, conv.compute_dtype), kernel, [1, *conv.strides, 1], conv.padding.upper())
    return tf.nn.relu(tf.nn.bias_add(x, bias))


def conv3d_transpose_bn_relu(inputs, conv, norm):
    """Same for a keras Conv3DTranspose with kernel 2 and stride 2, padding "valid" (the V-Net's up-convolutions)."""
    kernel, bias = folded_weights(conv.kernel, conv.bias if conv.use_bias else None, norm, 3, conv.compute_dtype)
    x = tf.cast(inputs, conv.compute_dtype)
    shape = tf.shape(x)
    output_shape = tf.stack([shape[0], 2 * shape[1], 2 * shape[2], 2 * shape[3], kernel.shape[3]])
    y = tf.nn.conv3d_transpose(x, kernel, output_shape, [1, 2, 2, 2, 1], "VALID")
    return tf.nn.relu(tf.nn.bias_add(y, bias))
