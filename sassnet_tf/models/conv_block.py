"""ConvBlock: one V-Net stage of 3x3x3 convolutions."""

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
class ConvBlock(keras.layers.Layer):
    """`n_convs` x (3x3x3 convolution with bias, padding "same" -> normalisation -> ReLU), channels-last.

    Args:
        filters: output channels of every convolution.
        n_convs: number of convolutions in the stage (the V-Net uses 1, 2 or 3).
        normalization: batchnorm | groupnorm | instancenorm | none (see `layer_options.make_normalization`).
        **kwargs: standard Layer arguments (name, dtype, ...); sub-layers share this layer's dtype policy.

    Example:
        >>> block = ConvBlock(8, n_convs=2)
        >>> block(keras.ops.zeros((1, 16, 16, 16, 4))).shape
        (1, 16, 16, 16, 8)
    """

    def __init__(self, filters, n_convs=1, normalization="batchnorm", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int(filters, "filters", "ConvBlock")
        self.n_convs = check_positive_int(n_convs, "n_convs", "ConvBlock")
        self.normalization = check_normalization(normalization, "ConvBlock")
        self.convs = [
            keras.layers.Conv3D(filters, 3, padding="same", kernel_initializer=torch_kernel_initializer(),
                                dtype=self.dtype_policy, name=f"conv_{i}")
            for i in range(n_convs)
        ]
        self.norms = []
        if normalization != "none":
            self.norms = [make_normalization(normalization, filters, self.dtype_policy) for _ in range(n_convs)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for i, conv in enumerate(self.convs):
            if shape[-1] is None:
                raise ValueError(f"ConvBlock {self.name}: the channel axis of input shape {shape} must be known")
            # torch's bias bound depends on the input channels, only known here.
            conv.bias_initializer = torch_bias_initializer(shape[-1] * 27)
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if self.norms:
                self.norms[i].build(shape)

    def call(self, inputs, training=None):
        x = inputs
        for i, conv in enumerate(self.convs):
            if self.norms and can_fold(self.norms[i], training):
                x = conv3d_bn_relu(x, conv, self.norms[i])  # same result, one kernel
                continue
            x = keras.ops.relu(conv_norm(conv, self.norms[i] if self.norms else None, x, training))
        return x

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, n_convs=self.n_convs, normalization=self.normalization)
        return config
