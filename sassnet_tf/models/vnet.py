"""The dual-head V-Net of SASSNet: segmentation logits and a tanh signed-distance-map head."""

from __future__ import annotations

import numbers

import keras

from sassnet_tf.models.conv_block import ConvBlock
from sassnet_tf.models.down_block import DownBlock
from sassnet_tf.models.layer_options import (
    check_normalization,
    check_positive_int,
    deserialize_dtype_policy,
    torch_bias_initializer,
    torch_kernel_initializer,
)
from sassnet_tf.models.up_block import UpBlock

# The encoder halves the patch four times, so every spatial axis must be a multiple of this.
SIZE_MULTIPLE = 16


@keras.saving.register_keras_serializable(package="sassnet_tf")
class VNet(keras.Model):
    """Plain (non-residual) V-Net with two 1x1x1 heads, as the SASSNet reference.

    Encoder stages of 1, 2, 3, 3, 3 convolutions at n, 2n, 4n, 8n, 16n channels with a stride-2 convolution
    between them; decoder of transposed convolutions whose outputs are ADDED to the encoder features, then stages
    of 3, 3, 2, 1 convolutions at 8n, 4n, 2n, n channels. Channel-wise dropout (SpatialDropout3D, torch
    Dropout3d) on the bottleneck output and on the last decoder feature, in training only. Heads on the last
    decoder feature: 1x1x1 conv -> tanh (signed distance map) and 1x1x1 conv (segmentation logit; sigmoid it).

    The heads run in float32 whatever the dtype policy, so both outputs are float32 under mixed precision.
    Trainable parameters with n_filters=16: batchnorm 9,448,866 (reference), groupnorm the same (affine, 2 per
    channel, as BN), instancenorm 9,443,266 (torch InstanceNorm3d has no affine: 5,600 fewer), none 9,443,266.
    Batchnorm adds 5,600 non-trainable moving statistics. Weights start as torch's defaults
    (`layer_options`).

    Args:
        n_filters: channels of the first stage (reference 16).
        normalization: batchnorm | groupnorm | instancenorm | none.
        dropout: rate of the channel-wise dropout (reference 0.5); 0 disables it.
        in_channels: image channels (1 for LA MRI).
        **kwargs: keras.Model arguments (name, dtype).

    Call:
        ``vnet(x, training=...)`` with x ``[B, H, W, D, in_channels]``, H, W, D multiples of 16, returns
        ``{"seg": logits, "sdm": tanh}``, each ``[B, H, W, D, 1]`` float32.

    Example:
        >>> vnet = build_vnet(n_filters=4)
        >>> out = vnet(keras.ops.zeros((1, 32, 32, 16, 1)), training=False)
        >>> out["seg"].shape, out["sdm"].dtype
        (TensorShape([1, 32, 32, 16, 1]), tf.float32)
    """

    def __init__(self, n_filters=16, normalization="batchnorm", dropout=0.5, in_channels=1, **kwargs):
        super().__init__(**kwargs)
        self.n_filters = check_positive_int(n_filters, "n_filters", "VNet")
        self.normalization = check_normalization(normalization, "VNet")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"VNet: dropout must be a rate in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.in_channels = check_positive_int(in_channels, "in_channels", "VNet")

        n, norm, policy = n_filters, normalization, self.dtype_policy

        def conv_block(filters, n_convs, name):
            return ConvBlock(filters, n_convs, norm, dtype=policy, name=name)

        self.block_1 = conv_block(n, 1, "block_1")
        self.down_1 = DownBlock(2 * n, norm, dtype=policy, name="down_1")
        self.block_2 = conv_block(2 * n, 2, "block_2")
        self.down_2 = DownBlock(4 * n, norm, dtype=policy, name="down_2")
        self.block_3 = conv_block(4 * n, 3, "block_3")
        self.down_3 = DownBlock(8 * n, norm, dtype=policy, name="down_3")
        self.block_4 = conv_block(8 * n, 3, "block_4")
        self.down_4 = DownBlock(16 * n, norm, dtype=policy, name="down_4")
        self.block_5 = conv_block(16 * n, 3, "block_5")
        self.bottleneck_dropout = keras.layers.SpatialDropout3D(self.dropout, dtype=policy, name="bottleneck_dropout")
        self.up_5 = UpBlock(8 * n, norm, dtype=policy, name="up_5")
        self.block_6 = conv_block(8 * n, 3, "block_6")
        self.up_6 = UpBlock(4 * n, norm, dtype=policy, name="up_6")
        self.block_7 = conv_block(4 * n, 3, "block_7")
        self.up_7 = UpBlock(2 * n, norm, dtype=policy, name="up_7")
        self.block_8 = conv_block(2 * n, 2, "block_8")
        self.up_8 = UpBlock(n, norm, dtype=policy, name="up_8")
        self.block_9 = conv_block(n, 1, "block_9")
        self.decoder_dropout = keras.layers.SpatialDropout3D(self.dropout, dtype=policy, name="decoder_dropout")
        # float32 heads: the losses and the tanh/sigmoid saturate badly in bf16/fp16.
        self.sdm_head = keras.layers.Conv3D(1, 1, activation="tanh", kernel_initializer=torch_kernel_initializer(),
                                            bias_initializer=torch_bias_initializer(n), dtype="float32",
                                            name="sdm_head")
        self.seg_head = keras.layers.Conv3D(1, 1, kernel_initializer=torch_kernel_initializer(),
                                            bias_initializer=torch_bias_initializer(n), dtype="float32",
                                            name="seg_head")

    # Built on demand rather than stored: a stored list would track every block a second time in saved weights.
    def _encoder(self):
        return [(self.block_1, self.down_1), (self.block_2, self.down_2), (self.block_3, self.down_3),
                (self.block_4, self.down_4)]

    def _decoder(self):
        return [(self.up_5, self.block_6), (self.up_6, self.block_7), (self.up_7, self.block_8),
                (self.up_8, self.block_9)]

    def _check_input_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 5:
            raise ValueError(f"VNet {self.name}: expected input [batch, H, W, D, {self.in_channels}], "
                             f"got shape {shape}")
        if shape[-1] is not None and shape[-1] != self.in_channels:
            raise ValueError(f"VNet {self.name}: expected {self.in_channels} input channel(s), got shape {shape}")
        for axis, size in zip("HWD", shape[1:4]):
            if size is not None and size % SIZE_MULTIPLE:
                raise ValueError(f"VNet {self.name}: input axis {axis} is {size}, expected a positive multiple of "
                                 f"{SIZE_MULTIPLE} (the encoder halves it four times); input shape {shape}")
        return shape

    def build(self, input_shape):
        shape = self._check_input_shape(input_shape)
        shape = (*shape[:-1], self.in_channels)
        for block, down in self._encoder():
            block.build(shape)
            shape = block.compute_output_shape(shape)
            down.build(shape)
            shape = down.compute_output_shape(shape)
        self.block_5.build(shape)
        shape = self.block_5.compute_output_shape(shape)
        for up, block in self._decoder():
            up.build(shape)
            shape = up.compute_output_shape(shape)
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.sdm_head.build(shape)
        self.seg_head.build(shape)

    def call(self, inputs, training=None):
        self._check_input_shape(inputs.shape)
        x = inputs
        skips = []
        for block, down in self._encoder():
            x = block(x, training=training)
            skips.append(x)
            x = down(x, training=training)
        x = self.block_5(x, training=training)
        x = self.bottleneck_dropout(x, training=training)
        for (up, block), skip in zip(self._decoder(), reversed(skips)):
            x = block(up(x, training=training) + skip, training=training)
        x = self.decoder_dropout(x, training=training)
        return {"seg": self.seg_head(x), "sdm": self.sdm_head(x)}

    def get_config(self):
        config = super().get_config()
        config.update(n_filters=self.n_filters, normalization=self.normalization, dropout=self.dropout,
                      in_channels=self.in_channels)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_dtype_policy(config))


def build_vnet(n_filters=16, normalization="batchnorm", dropout=0.5, in_channels=1, **kwargs) -> VNet:
    """Create a VNet and build its weights for inputs ``[None, None, None, None, in_channels]`` (any patch size
    that is a multiple of 16 on each axis), under the current global dtype policy.

    Args:
        n_filters, normalization, dropout, in_channels: see `VNet`.
        **kwargs: keras.Model arguments (name, dtype).
    """
    model = VNet(n_filters=n_filters, normalization=normalization, dropout=dropout, in_channels=in_channels,
                 **kwargs)
    model.build((None, None, None, None, in_channels))
    return model
