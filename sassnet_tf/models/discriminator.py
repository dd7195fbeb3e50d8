"""The SASSNet discriminator: tells SDMs of labeled patches (class 1) from those of unlabeled ones (class 0)."""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf

from sassnet_tf.models.layer_options import (
    check_positive_int,
    deserialize_dtype_policy,
    torch_bias_initializer,
    torch_kernel_initializer,
)
from sassnet_tf.models.space_to_depth_conv import strided_conv3d

# Four stride-2 convolutions: each spatial axis must be at least 2^4 to leave one voxel to pool.
MIN_SIZE = 16
# The reference's nn.LeakyReLU(negative_slope=0.2).
LEAKY_SLOPE = 0.2


@tf.custom_gradient
def _leaky_relu(x):
    """LeakyReLU (slope 0.2) whose gradient reads its output, not its input; value and gradient equal TF's LeakyRelu.

    Grappler's remapper fuses the conv + bias (+ add) + LeakyRelu before it into one oneDNN op. TF's own gradient,
    LeakyReluGrad, reads the activation's input, which the fusion removes: the remapper then fails ("remapper
    failed: ... fanout 'LeakyReluGrad' exist for missing node") and drops every fusion of the train step
    (docs/PERFORMANCE.md). The output has the input's sign (slope > 0), so LeakyReluGrad given the output selects
    exactly as given the input (0 takes the slope, like TF) and the fused op's output is all the gradient needs.
    """
    y = tf.nn.leaky_relu(x, alpha=LEAKY_SLOPE)

    def grad(dy):
        return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=LEAKY_SLOPE)

    return y, grad


@keras.saving.register_keras_serializable(package="sassnet_tf")
class Discriminator(keras.Model):
    """Fully convolutional 3D discriminator on (signed distance map, image).

    SDM -> 4x4x4 conv stride 2 (ndf) and image -> 4x4x4 conv stride 2 (ndf), the two ADDED; LeakyReLU 0.2 and
    channel-wise dropout; 4x4x4 stride-2 convs to 2ndf, 4ndf (each LeakyReLU 0.2 + dropout) and 8ndf (LeakyReLU);
    global average pool; dense 8ndf -> 2 logits. Dropout acts in training only.

    Padding emulates torch's ``padding=1``: one zero voxel on every side then a "valid" convolution, so each conv
    gives floor(n / 2) voxels and the same feature maps as the reference for any n (Keras "same" would pad
    asymmetrically and give ceil(n / 2) on odd sizes). The convolutions run through `strided_conv3d`, which computes
    them as space-to-depth + a stride-1 2x2x2 convolution where TF's strided gradient is slow on CPU (same result);
    their kernels and biases stay in Keras Conv3D layers, so weight files keep the layout of plain Conv3D layers. The
    reference's fixed 7x7x5 average pool equals the global pool at 112x112x80; the global pool also works at other
    sizes. Trainable parameters with ndf=64: 11,020,290. The pooling and the dense layer run in float32, so the logits
    are float32 under mixed precision.

    Args:
        ndf: channels of the first convolutions (reference 64).
        in_channels: image channels (1 for LA MRI).
        sdm_channels: channels of the signed distance map (1: one foreground class).
        dropout: channel-wise dropout rate (reference 0.5).
        **kwargs: keras.Model arguments (name, dtype).

    Call:
        ``disc((sdm, image), training=...)`` with sdm ``[B, H, W, D, sdm_channels]`` and image
        ``[B, H, W, D, in_channels]``, each spatial axis >= 16, returns logits ``[B, 2]`` float32.

    Example:
        >>> disc = build_discriminator(ndf=4)
        >>> x = keras.ops.zeros((2, 32, 32, 16, 1))
        >>> disc((x, x), training=False).shape
        TensorShape([2, 2])
    """

    def __init__(self, ndf=64, in_channels=1, sdm_channels=1, dropout=0.5, **kwargs):
        super().__init__(**kwargs)
        self.ndf = check_positive_int(ndf, "ndf", "Discriminator")
        self.in_channels = check_positive_int(in_channels, "in_channels", "Discriminator")
        self.sdm_channels = check_positive_int(sdm_channels, "sdm_channels", "Discriminator")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"Discriminator: dropout must be a rate in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        policy = self.dtype_policy

        def conv(filters, fan_in_channels, name):
            return keras.layers.Conv3D(filters, 4, strides=2, padding="valid",
                                       kernel_initializer=torch_kernel_initializer(),
                                       bias_initializer=torch_bias_initializer(fan_in_channels * 64),
                                       dtype=policy, name=name)

        self.sdm_conv = conv(ndf, sdm_channels, "sdm_conv")
        self.image_conv = conv(ndf, in_channels, "image_conv")
        self.conv_2 = conv(2 * ndf, ndf, "conv_2")
        self.conv_3 = conv(4 * ndf, 2 * ndf, "conv_3")
        self.conv_4 = conv(8 * ndf, 4 * ndf, "conv_4")
        self.dropout_1 = keras.layers.SpatialDropout3D(self.dropout, dtype=policy, name="dropout_1")
        self.dropout_2 = keras.layers.SpatialDropout3D(self.dropout, dtype=policy, name="dropout_2")
        self.dropout_3 = keras.layers.SpatialDropout3D(self.dropout, dtype=policy, name="dropout_3")
        self.pool = keras.layers.GlobalAveragePooling3D(dtype="float32", name="pool")
        self.classifier = keras.layers.Dense(2, kernel_initializer=torch_kernel_initializer(),
                                             bias_initializer=torch_bias_initializer(8 * ndf), dtype="float32",
                                             name="classifier")

    def _check_input_shapes(self, sdm_shape, image_shape):
        sdm_shape, image_shape = tuple(sdm_shape), tuple(image_shape)
        for what, shape, channels in (("sdm", sdm_shape, self.sdm_channels), ("image", image_shape, self.in_channels)):
            if len(shape) != 5:
                raise ValueError(f"Discriminator {self.name}: {what} must be [batch, H, W, D, {channels}], "
                                 f"got shape {shape}")
            if shape[-1] is not None and shape[-1] != channels:
                raise ValueError(f"Discriminator {self.name}: {what} must have {channels} channel(s), "
                                 f"got shape {shape}")
            for axis, size in zip("HWD", shape[1:4]):
                if size is not None and size < MIN_SIZE:
                    raise ValueError(f"Discriminator {self.name}: {what} axis {axis} is {size}, expected >= {MIN_SIZE} "
                                     f"(four stride-2 convolutions); shape {shape}")
        for a, b in zip(sdm_shape[1:4], image_shape[1:4]):
            if a is not None and b is not None and a != b:
                raise ValueError(f"Discriminator {self.name}: sdm {sdm_shape} and image {image_shape} differ in size")

    @staticmethod
    def _split(inputs, what):
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError(f"Discriminator: expected {what} as a pair (sdm, image), got {type(inputs).__name__}")
        return inputs

    @staticmethod
    def _conv_output_shape(shape, conv):
        """Shape after a 4x4x4 stride-2 padding-1 convolution: floor(n / 2) per known axis."""
        return (shape[0], *(None if n is None else (n + 2 - 4) // 2 + 1 for n in shape[1:4]), conv.filters)

    def _conv(self, conv, x):
        """torch Conv3d(k=4, s=2, padding=1) with the weights of Keras layer `conv`, in this model's compute dtype.

        Computed by `strided_conv3d` rather than by calling the layer: TF's CPU gradient of the strided 4x4x4
        conv can be ~100x slower than the space-to-depth form. The layer stays the owner of the variables (names,
        shapes, weight files).
        """
        x = keras.ops.cast(x, self.compute_dtype)
        y = strided_conv3d(x, conv.kernel, strides=2, padding=1)
        return tf.nn.bias_add(y, keras.ops.cast(conv.bias, self.compute_dtype))

    def build(self, input_shape):
        sdm_shape, image_shape = self._split(input_shape, "the input shape")
        self._check_input_shapes(sdm_shape, image_shape)
        sdm_shape = (*tuple(sdm_shape)[:-1], self.sdm_channels)
        image_shape = (*tuple(image_shape)[:-1], self.in_channels)
        # The Conv3D layers hold the weights only (see `_conv`): their build needs just the channel count.
        self.sdm_conv.build(sdm_shape)
        self.image_conv.build(image_shape)
        shape = self._conv_output_shape(sdm_shape, self.sdm_conv)
        for conv in (self.conv_2, self.conv_3, self.conv_4):
            conv.build(shape)
            shape = self._conv_output_shape(shape, conv)
        self.classifier.build((shape[0], shape[-1]))

    def call(self, inputs, training=None):
        sdm, image = self._split(inputs, "the inputs")
        self._check_input_shapes(sdm.shape, image.shape)
        x = self._conv(self.sdm_conv, sdm) + self._conv(self.image_conv, image)
        x = self.dropout_1(_leaky_relu(x), training=training)
        x = self.dropout_2(_leaky_relu(self._conv(self.conv_2, x)), training=training)
        x = self.dropout_3(_leaky_relu(self._conv(self.conv_3, x)), training=training)
        x = _leaky_relu(self._conv(self.conv_4, x))
        return self.classifier(self.pool(x))

    def get_config(self):
        config = super().get_config()
        config.update(ndf=self.ndf, in_channels=self.in_channels, sdm_channels=self.sdm_channels,
                      dropout=self.dropout)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_dtype_policy(config))


def build_discriminator(ndf=64, in_channels=1, sdm_channels=1, dropout=0.5, **kwargs) -> Discriminator:
    """Create a Discriminator and build its weights for inputs of any size (each spatial axis >= 16).

    Args:
        ndf, in_channels, sdm_channels, dropout: see `Discriminator`.
        **kwargs: keras.Model arguments (name, dtype).
    """
    model = Discriminator(ndf=ndf, in_channels=in_channels, sdm_channels=sdm_channels, dropout=dropout, **kwargs)
    model.build(((None, None, None, None, sdm_channels), (None, None, None, None, in_channels)))
    return model
