"""A block's convolution followed by its normalisation in training, with the bias folded into batch norm."""

from __future__ import annotations

import keras
import tensorflow as tf

from sassnet_tf.models.fused_batch_norm import FusedBatchNorm
from sassnet_tf.models.safe_conv3d import conv3d_same, filter_gradient_needs_float32


def convolve(conv, inputs, use_bias=True):
    """`conv(inputs)` for a keras Conv3D or Conv3DTranspose, without its bias when `use_bias` is False.

    A stride-1 Conv3D whose bf16 filter gradient oneDNN gets wrong on AVX512-BF16 CPUs without AMX takes it in
    float32 (`safe_conv3d`); every other case is the layer's own convolution.
    """
    dtype = conv.compute_dtype
    if isinstance(conv, keras.layers.Conv3DTranspose):
        if use_bias:
            return conv(inputs)
        return keras.ops.conv_transpose(tf.cast(inputs, dtype), tf.cast(conv.kernel, dtype), conv.strides,
                                        conv.padding, conv.output_padding, conv.data_format, conv.dilation_rate)
    if filter_gradient_needs_float32(inputs.shape[1], conv.kernel_size[0], dtype) and conv.strides == (1, 1, 1):
        y = conv3d_same(tf.cast(inputs, dtype), tf.cast(conv.kernel, dtype))
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
