"""Torch-style strided 3D convolutions, optionally computed as space-to-depth + stride-1 convolution.

Without TensorFlow's oneDNN kernels (its default on this AVX2 CPU), the gradient of a strided conv3d whose kernel
is larger than its stride (the discriminator's 4x4x4 stride 2) is pathologically slow at narrow widths: 20 s for
[4, 50, 50, 34, 1] -> 16 channels against 0.06 s forward (docs/PERFORMANCE.md). Folding each s x s x s block of
voxels into the channels turns the same convolution into a stride-1 (k/s)^3 convolution on s^3 * C channels: the
same result to float rounding, with ordinary fast gradients. With oneDNN on, the strided convolution is fine except
on very few input channels, where space-to-depth is still 2-4x faster; `strided_conv3d` picks per layer.

The kernel stays a Keras/torch-layout ``[k, k, k, C, F]`` tensor (it is only reshaped on the fly), so layers keep
their variables, parameter counts, initialisers and saved weight files.
"""

from __future__ import annotations

import tensorflow as tf

from sassnet_tf.utils.runtime import onednn_enabled

# With oneDNN on, space-to-depth pays only below this many input channels (the discriminator's 1-channel inputs).
SPACE_TO_DEPTH_MAX_CHANNELS_ONEDNN = 8
METHODS = ("auto", "space_to_depth", "direct")


def strided_conv3d(inputs, kernel, strides=2, padding=1, method="auto"):
    """torch ``Conv3d(kernel_size=k, stride=s, padding=p, bias=False)`` on channels-last inputs, the fastest way.

    Args:
        inputs: ``[B, H, W, D, C]`` tensor.
        kernel: ``[k, k, k, C, F]`` tensor or variable (Keras Conv3D layout), cast to the inputs' dtype.
        strides: the stride s on every spatial axis.
        padding: zeros added on both sides of every spatial axis.
        method: "space_to_depth" (`space_to_depth_conv3d`), "direct" (zero padding then a strided "VALID"
            tf.nn.conv3d, or "SAME" without a Pad op where equal: `same_padding_matches`) or "auto": space-to-depth
            unless oneDNN is on and C >= 8 (measured, PERFORMANCE.md).

    Returns:
        ``[B, H', W', D', F]`` with ``floor((n + 2p - k) / s) + 1`` voxels per axis, without bias.
    """
    if method not in METHODS:
        raise ValueError(f"strided_conv3d: method {method!r} is not one of {', '.join(METHODS)}")
    if method == "auto":
        narrow = int(kernel.shape[3]) < SPACE_TO_DEPTH_MAX_CHANNELS_ONEDNN
        s2d_ok = kernel.shape[0] % strides == 0
        method = "space_to_depth" if s2d_ok and (narrow or not onednn_enabled()) else "direct"
    if method == "space_to_depth":
        return space_to_depth_conv3d(inputs, kernel, strides, padding)
    p, s = int(padding), int(strides)
    kernel = tf.cast(kernel, inputs.dtype)
    if p and same_padding_matches(inputs.shape[1:4], int(kernel.shape[0]), s, p):
        # No Pad op: Grappler fuses Pad into the conv although the filter gradient still reads the padded input,
        # fails ("remapper failed: ... Conv3DBackpropFilterV2 exist for missing node Pad") and drops every
        # fusion of the train step.
        return tf.nn.conv3d(inputs, kernel, [1, s, s, s, 1], "SAME")
    x = tf.pad(inputs, [[0, 0], [p, p], [p, p], [p, p], [0, 0]]) if p else inputs
    return tf.nn.conv3d(x, kernel, [1, s, s, s, 1], "VALID")


def same_padding_matches(sizes, k, s, p) -> bool:
    """Whether TF's "SAME" padding reads the same windows as torch's symmetric `p` on these static sizes.

    "SAME" outputs ceil(n / s) and pads max((out - 1) * s + k - n, 0) zeros, the smaller half first; it equals
    torch padding p when it pads p first and yields torch's floor((n + 2p - k) / s) + 1 outputs (then every window
    starts at the same voxel and reads zeros wherever torch's does). Unknown sizes: False.
    """
    for n in sizes:
        if n is None:
            return False
        out = -(-n // s)
        if max((out - 1) * s + k - n, 0) // 2 != p or out != (n + 2 * p - k) // s + 1:
            return False
    return True


def _dims(x):
    """Static sizes where known, else scalar tensors: keeps the static output shape when the input has one."""
    dynamic = tf.shape(x)
    return [size if size is not None else dynamic[i] for i, size in enumerate(x.shape)]


def space_to_depth_conv3d(inputs, kernel, strides=2, padding=1):
    """torch ``Conv3d(kernel_size=k, stride=s, padding=p, bias=False)`` on channels-last inputs, via space-to-depth.

    Equal to zero-padding every spatial side by ``padding`` and running ``tf.nn.conv3d(..., strides=s, "VALID")``:
    each axis of size n gives ``floor((n + 2p - k) / s) + 1`` outputs (voxels past the last full window are
    dropped, as torch and "VALID" do).

    Args:
        inputs: ``[B, H, W, D, C]`` tensor; spatial sizes may be unknown until run time.
        kernel: ``[k, k, k, C, F]`` tensor or variable (Keras Conv3D layout), cast to the inputs' dtype.
        strides: the stride s on every spatial axis; k must be a multiple of s.
        padding: zeros added on both sides of every spatial axis (torch ``padding``).

    Returns:
        ``[B, H', W', D', F]`` tensor in the inputs' dtype, without bias.
    """
    k, s, p = int(kernel.shape[0]), int(strides), int(padding)
    if tuple(kernel.shape[:3]) != (k, k, k) or len(kernel.shape) != 5:
        raise ValueError(f"space_to_depth_conv3d: kernel must be [k, k, k, C, F], got shape {tuple(kernel.shape)}")
    if s < 1 or k % s or p < 0:
        raise ValueError(f"space_to_depth_conv3d: need stride >= 1 dividing the kernel size {k} and padding >= 0, "
                         f"got stride {strides} and padding {padding}")
    if len(inputs.shape) != 5:
        raise ValueError(f"space_to_depth_conv3d: inputs must be [B, H, W, D, C], got shape {tuple(inputs.shape)}")
    channels, filters = int(kernel.shape[3]), int(kernel.shape[4])
    if inputs.shape[-1] is not None and inputs.shape[-1] != channels:
        raise ValueError(f"space_to_depth_conv3d: inputs have {inputs.shape[-1]} channels, the kernel expects "
                         f"{channels}")
    x = inputs
    if p:
        x = tf.pad(x, [[0, 0], [p, p], [p, p], [p, p], [0, 0]])
    batch, *spatial, _ = _dims(x)
    # Output count per axis as torch; crop to the voxels those windows read, a multiple of s since s divides k.
    blocks = [(n - k) // s + 1 + (k // s - 1) for n in spatial]
    x = x[:, :blocks[0] * s, :blocks[1] * s, :blocks[2] * s, :]
    # [B, h*s, w*s, d*s, C] -> [B, h, w, d, s*s*s*C], the block offsets (i, j, l) major, the channel minor.
    x = tf.reshape(x, [batch, blocks[0], s, blocks[1], s, blocks[2], s, channels])
    x = tf.transpose(x, [0, 1, 3, 5, 2, 4, 6, 7])
    x = tf.reshape(x, [batch, blocks[0], blocks[1], blocks[2], s ** 3 * channels])
    # Kernel tap a*s + i on an axis -> block tap a, offset i; offsets folded into the channels the same way.
    m = k // s
    w = tf.cast(kernel, x.dtype)
    w = tf.reshape(w, [m, s, m, s, m, s, channels, filters])
    w = tf.transpose(w, [0, 2, 4, 1, 3, 5, 6, 7])
    w = tf.reshape(w, [m, m, m, s ** 3 * channels, filters])
    return tf.nn.conv3d(x, w, [1, 1, 1, 1, 1], "VALID")
