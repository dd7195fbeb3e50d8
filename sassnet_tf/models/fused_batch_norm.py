"""FusedBatchNorm: Keras BatchNormalization whose training pass runs TensorFlow's fused kernel on 5D inputs."""

from __future__ import annotations

import keras
import tensorflow as tf


def _as_4d(x):
    """``[B, H, W, D, C]`` -> ``[B, H * W, D, C]``: batch norm's statistics are per channel, so merging two spatial
    axes changes nothing, and TensorFlow hands 4D NHWC batch norm to oneDNN (5D runs Eigen's slower kernel)."""
    shape = tf.shape(x)
    return tf.reshape(x, tf.stack([shape[0], shape[1] * shape[2], shape[3], shape[4]]))


def fused_batch_norm_train(x, gamma, beta, moving_mean, moving_variance, epsilon, momentum, conv_bias=None):
    """Training-mode batch norm of a channels-last 5D `x` in its own dtype, statistics in float32.

    Returns ``(y, new_moving_mean, new_moving_variance)``; the moving variance takes the unbiased batch variance, as
    torch's BatchNorm does. `conv_bias`, when given, is the bias of the convolution that produced `x` without it:
    in training, ``bn(x + b)`` equals ``bn(x)`` exactly (the batch mean takes `b` away), so the bias costs no pass over
    the activation; it only moves the moving mean (added back here), and its exact gradient is zero, which is what
    this function returns for it (so the optimiser still applies weight decay to it, as torch's SGD does).

    Args:
        x: ``[B, H, W, D, C]`` tensor (float32, bfloat16 or float16).
        gamma, beta, moving_mean, moving_variance, conv_bias: float32 ``[C]`` tensors.
        epsilon: added to the variance.
        momentum: Keras momentum (the moving statistics keep this fraction of their value).
    """
    shift = tf.zeros_like(moving_mean) if conv_bias is None else tf.cast(conv_bias, tf.float32)

    @tf.custom_gradient
    def normalise(x, gamma, beta, shift):
        shape = tf.shape(x)
        # The op mixes `mean` into the running mean: feeding mean - shift makes the result the running mean of
        # x + shift.
        y, running_mean, running_var, saved_mean, saved_inv_var, reserve = tf.raw_ops.FusedBatchNormV3(
            x=_as_4d(x), scale=gamma, offset=beta, mean=moving_mean - shift, variance=moving_variance,
            epsilon=epsilon, exponential_avg_factor=1.0 - momentum, data_format="NHWC", is_training=True)

        def grad(dy, _d_mean, _d_var):
            dx, dgamma, dbeta, _, _ = tf.raw_ops.FusedBatchNormGradV3(
                y_backprop=_as_4d(dy), x=_as_4d(x), scale=gamma, reserve_space_1=saved_mean,
                reserve_space_2=saved_inv_var, reserve_space_3=reserve, epsilon=epsilon, data_format="NHWC",
                is_training=True)
            return tf.reshape(dx, shape), dgamma, dbeta, tf.zeros_like(shift)

        return (tf.reshape(y, shape), tf.stop_gradient(running_mean + shift), tf.stop_gradient(running_var)), grad

    return normalise(x, gamma, beta, shift)


@keras.saving.register_keras_serializable(package="sassnet_tf")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """torch ``BatchNorm3d`` on channels-last 5D inputs, same variables and inference as Keras BatchNormalization.

    In training, Keras computes the batch moments and the normalisation as separate element-wise ops in float32,
    each a pass over the activation and each with its own gradient. Here TensorFlow's ``FusedBatchNormV3`` does the
    forward in one kernel and the backward in another, on the activation in its compute dtype (bf16 under
    mixed_bfloat16: no casts; the kernel keeps its statistics in float32) and as 4D, which oneDNN runs: a conv + BN
    + ReLU forward and backward on [4, 112, 112, 80, 16] in bf16 took 0.84 s with float32 5D batch norm and 0.50 s
    so (docs/PERFORMANCE.md). It also updates the moving variance with the unbiased batch variance, as torch does
    (Keras uses the biased one). Other cases (inference, masks, renorm, non-5D inputs, an axis other than the last,
    a non-TensorFlow backend) run the Keras implementation unchanged.

    `normalize_with_conv_bias(x, b)` normalises ``x + b`` in training where the convolution left out its bias `b`
    (`fused_batch_norm_train`): the bias then costs no pass over the activation.

    Args:
        **kwargs: keras.layers.BatchNormalization arguments (momentum, epsilon, center, scale, ...).
    """

    def _fused_applies(self, inputs, training, mask) -> bool:
        return (bool(training) and self.trainable and mask is None and not self.renorm and not self.synchronized
                and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 5
                and self.axis in (-1, 4))

    def absorbs_conv_bias(self, inputs, training, mask=None) -> bool:
        """Whether this call would run the fused training kernel, which can take a convolution's bias without
        adding it to `inputs` (`normalize_with_conv_bias`)."""
        return self._fused_applies(inputs, training, mask)

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        return self.normalize_with_conv_bias(inputs, None)

    def normalize_with_conv_bias(self, inputs, conv_bias):
        """Training-mode batch norm of ``inputs + conv_bias`` without the addition (`fused_batch_norm_train`).

        Only where `absorbs_conv_bias` holds. A plain method, not a Keras call: Keras would cast the float32 bias to
        the bf16 compute dtype, and the moving mean would take the rounded bias.
        """
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        outputs, moving_mean, moving_variance = fused_batch_norm_train(
            tf.cast(inputs, self.compute_dtype), gamma, beta, tf.cast(self.moving_mean, tf.float32),
            tf.cast(self.moving_variance, tf.float32), self.epsilon, self.momentum, conv_bias)
        # Gradients never flow into the moving statistics (Keras does the same by assigning outside the tape).
        self.moving_mean.assign(moving_mean)
        self.moving_variance.assign(moving_variance)
        return outputs
