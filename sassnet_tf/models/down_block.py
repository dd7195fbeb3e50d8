"""DownBlock: the V-Net's strided-convolution downsampling."""

from __future__ import annotations

import keras

from sassnet_tf.models.conv_norm import conv_norm
from sassnet_tf.models.folded_conv import can_fold, conv3d_bn_relu
from sassnet_tf.models.layer_options import (
    check_normalization,
    check_positive_int,
    make_normalization,
    torch_bias_initializer,
    torch_kernel_initializer,
)


@keras.saving.register_keras_serializable(package="sassnet_tf")
class DownBlock(keras.layers.Layer):
    """2x2x2 convolution with stride 2 and bias -> normalisation -> ReLU: halves each spatial axis.

    Args:
        filters: output channels (the V-Net doubles the channels here).
        normalization: batchnorm | groupnorm | instancenorm | none.
        **kwargs: standard Layer arguments (name, dtype, ...).

    Example:
        >>> DownBlock(8)(keras.ops.zeros((1, 16, 16, 8, 4))).shape
        (1, 8, 8, 4, 8)
    """

    def __init__(self, filters, normalization="batchnorm", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int(filters, "filters", "DownBlock")
        self.normalization = check_normalization(normalization, "DownBlock")
        self.conv = keras.layers.Conv3D(filters, 2, strides=2, padding="valid",
                                        kernel_initializer=torch_kernel_initializer(), dtype=self.dtype_policy,
                                        name="conv")
        self.norm = make_normalization(normalization, filters, self.dtype_policy)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if shape[-1] is None:
            raise ValueError(f"DownBlock {self.name}: the channel axis of input shape {shape} must be known")
        self.conv.bias_initializer = torch_bias_initializer(shape[-1] * 8)
        self.conv.build(shape)
        if self.norm is not None:
            self.norm.build(self.conv.compute_output_shape(shape))

    def call(self, inputs, training=None):
        if can_fold(self.norm, training):
            return conv3d_bn_relu(inputs, self.conv, self.norm)  # same result, one kernel
        return keras.ops.relu(conv_norm(self.conv, self.norm, inputs, training))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(tuple(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, normalization=self.normalization)
        return config
