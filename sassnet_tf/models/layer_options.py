"""Shared helpers of the network blocks: the normalisation choices and torch-default initialisation.

REFERENCE.md records no custom weight initialisation, so layers start as torch initialises them:
kaiming-uniform with a = sqrt(5), i.e. weights and biases uniform in +-1/sqrt(fan_in).
"""

from __future__ import annotations

import math

import keras

from sassnet_tf.models.fused_batch_norm import FusedBatchNorm

NORMALIZATIONS = ("batchnorm", "groupnorm", "instancenorm", "none")

# torch's default weight init: bound = gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + 5)) -> 1 / sqrt(fan_in),
# which VarianceScaling gives as sqrt(3 * scale / fan_in) with scale = 1/3. Keras computes fan_in from the
# kernel shape as torch does: in * k^3 for Conv3D, out * k^3 for Conv3DTranspose (kernel [k, k, k, out, in]),
# in for Dense.
def torch_kernel_initializer() -> keras.initializers.Initializer:
    """torch's default kernel initializer (unseeded: each layer draws its own values)."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def torch_bias_initializer(fan_in: int) -> keras.initializers.Initializer:
    """torch's default bias init: uniform in +-1/sqrt(fan_in), fan_in computed as for the layer's kernel."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def check_normalization(normalization: str, owner: str) -> str:
    """Return `normalization` if it is a known choice, else raise ValueError naming `owner` and the choices."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"{owner}: normalization {normalization!r} is not one of {', '.join(NORMALIZATIONS)}")
    return normalization


def check_positive_int(value, field: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {field} must be a positive integer, got {value!r}")
    return value


def make_normalization(normalization: str, channels: int, dtype=None):
    """The normalisation layer after a convolution, as the reference's blocks build it, or None for "none".

    - batchnorm: torch BatchNorm3d (momentum 0.1 = Keras momentum 0.9, eps 1e-5, affine). 2C trainable
      (+2C moving statistics). `FusedBatchNorm`: TensorFlow's fused kernel in training, which also updates the
      moving variance with the unbiased batch variance as torch does.
    - groupnorm: torch GroupNorm(16 groups, affine, eps 1e-5). 2C trainable. Groups = gcd(16, C) so narrow test
      networks (C < 16) still work; at n_filters=16 every stage has 16 groups, as the reference.
    - instancenorm: torch InstanceNorm3d defaults (no affine, no running statistics, eps 1e-5). 0 parameters.
    - none: no layer.

    Args:
        normalization: one of NORMALIZATIONS.
        channels: number of channels normalised.
        dtype: dtype policy of the layer (the enclosing block's).
    """
    check_normalization(normalization, "make_normalization")
    if normalization == "batchnorm":
        return FusedBatchNorm(momentum=0.9, epsilon=1e-5, dtype=dtype)
    if normalization == "groupnorm":
        return keras.layers.GroupNormalization(groups=math.gcd(16, channels), epsilon=1e-5, dtype=dtype)
    if normalization == "instancenorm":
        return keras.layers.GroupNormalization(groups=-1, center=False, scale=False, epsilon=1e-5, dtype=dtype)
    return None


def deserialize_dtype_policy(config: dict) -> dict:
    """A copy of a model's `get_config()` with its serialized dtype policy turned back into a policy object.

    keras.Model.from_config passes a subclassed model's config to its constructor as it is. Keras 3.15 takes the
    policy's dict form there too; converting it here keeps reloading independent of that (setup.cfg allows >= 3.3).
    """
    config = dict(config)
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
    return config
