"""A block's convolution followed by its normalisation in training, with the bias folded into batch norm."""

from __future__ import annotations

import keras
import tensorflow as tf

from sassnet_tf.models.fused_batch_norm import FusedBatchNorm
from sassnet_tf.models.safe_conv3d import (
    conv3d_float32_filter_gradient,
    conv3d_same,
    conv3d_transpose_float32_filter_gradient,
    filter_gradient_needs_float32,
    slow_bf16_filter_gradient,
)


def convolve(conv, inputs, use_bias=True):
    """`conv(inputs)` for a keras Conv3D or Conv3DTranspose, without its bias when `use_bias` is False.

    In bf16 the filter gradient is taken in float32 where oneDNN's bf16 kernel is wrong (a stride-1 Conv3D with a
    short first axis on AVX512-BF16 CPUs without AMX) or slower than float32 on those CPUs (large activations:
    `slow_bf16_filter_gradient`); every other case is the layer's own convolution.
    """
    dtype = conv.compute_dtype
    plain = conv.dilation_rate == (1, 1, 1) and len(set(conv.strides)) == 1 and len(set(conv.kernel_size)) == 1
    if isinstance(conv, keras.layers.Conv3DTranspose):
        if (plain and conv.padding == "valid" and conv.output_padding is None
                and slow_bf16_filter_gradient(conv.compute_output_shape(tuple(inputs.shape)), dtype)):
            y = conv3d_transpose_float32_filter_gradient(tf.cast(inputs, dtype), tf.cast(conv.kernel, dtype),
                                                         conv.strides[0])
            return tf.nn.bias_add(y, tf.cast(conv.bias, dtype)) if use_bias and conv.use_bias else y
        if use_bias:
            return conv(inputs)
        return keras.ops.conv_transpose(tf.cast(inputs, dtype), tf.cast(conv.kernel, dtype), conv.strides,
                                        conv.padding, conv.output_padding, conv.data_format, conv.dilation_rate)
    if filter_gradient_needs_float32(inputs.shape[1], conv.kernel_size[0], dtype) and conv.strides == (1, 1, 1):
        y = conv3d_same(tf.cast(inputs, dtype), tf.cast(conv.kernel, dtype))
    elif plain and conv.groups == 1 and slow_bf16_filter_gradient(inputs.shape, dtype):
        y = conv3d_float32_filter_gradient(tf.cast(inputs, dtype), tf.cast(conv.kernel, dtype), conv.strides[0],
                                           conv.padding.upper())
    elif use_bias:
        return conv(inputs)
    else:
        y = conv.convolution_op(tf.cast(inputs, dtype), tf.cast(conv.kernel, dtype))
    return tf.nn.bias_add(y, tf.cast(conv.bias, dtype)) if use_bias and conv.use_bias else y


def conv_norm(conv, norm, inputs, training):
    """``norm(conv(inputs))`` (just the convolution when `norm` is None).

    Where `norm` is a FusedBatchNorm running its training kernel, the convolution leaves out its bias and batch
    norm takes it (`FusedBatchNorm.normalize_with_conv_bias`): the same result, without the bias's pass over the
    activation nor its gradient's (a reduction over the whole activation, whose exact value is zero).
    """
    if isinstance(norm, FusedBatchNorm) and conv.use_bias and norm.absorbs_conv_bias(inputs, training):
        return norm.normalize_with_conv_bias(convolve(conv, inputs, use_bias=False), conv.bias)
    x = convolve(conv, inputs)
    return x if norm is None else norm(x, training=training)
