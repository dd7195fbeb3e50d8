"""A stride-1 "SAME" 3D convolution whose bf16 filter gradient avoids a faulty oneDNN kernel.

Root cause (issue 18, measured on AMD EPYC Zen 4 and Zen 5: AVX512-BF16, no AMX; TensorFlow 2.21, oneDNN 3.7.3):
on CPUs with AVX512-BF16 but without AMX, oneDNN runs a bf16 convolution's backward-weights pass with its
``jit_bf16:avx512_core_bf16`` kernel. For a stride-1 convolution with padding, that kernel returns garbage (values
up to 1e38, or NaN) whenever the *first* spatial axis of the input (oneDNN's depth ``id``; the H of TensorFlow's
NDHWC) is longer than 1 and shorter than the kernel, i.e. when one output voxel's window reaches into the padding on
both sides of that axis: ``1 < id < k``. Forward and input-gradient kernels are right; other axes are right; AMX
CPUs run a different (brgemm) kernel and AVX2 CPUs emulate bf16 elsewhere. In the V-Net this is the bottleneck
(`block_5`, a 3x3x3 conv at 1/16 of the patch) when the patch's first axis is 32: its kernel gradient is garbage
from the first step, and the network is NaN a few steps later. The reproduction and the measurements are in
docs/PERFORMANCE.md ("bf16 on AVX512-BF16 CPUs without AMX").

The fix is at the faulty kernel: for such a layer the filter gradient is computed in float32 (oneDNN's float32
kernel is right), everything else stays bf16. Only layers with such a short axis take this path, so its cost is
nil (they are the smallest tensors of the network).
"""

from __future__ import annotations

import tensorflow as tf

_STRIDES = [1, 1, 1, 1, 1]


def filter_gradient_needs_float32(first_axis, kernel_size: int, dtype) -> bool:
    """Whether a stride-1 "SAME" conv's bf16 filter gradient must avoid oneDNN's faulty kernel (module docstring).

    Args:
        first_axis: static size of the input's first spatial axis, or None when unknown at trace time (then the
            decision is taken at run time: True here means "check").
        kernel_size: the kernel's size along that axis.
        dtype: the compute dtype of the convolution.
    """
    if tf.as_dtype(dtype) != tf.bfloat16 or kernel_size <= 2:
        return False  # with k <= 2 no length satisfies 1 < n < k
    return first_axis is None or 1 < first_axis < kernel_size


def _filter_gradient(inputs, kernel, grad_output, in_float32: bool):
    if in_float32:
        inputs, grad_output = tf.cast(inputs, tf.float32), tf.cast(grad_output, tf.float32)
    grad = tf.raw_ops.Conv3DBackpropFilterV2(input=inputs, filter_sizes=tf.shape(kernel), out_backprop=grad_output,
                                             strides=_STRIDES, padding="SAME")
    return tf.cast(grad, kernel.dtype)


@tf.custom_gradient
def _conv3d_float32_filter_gradient(inputs, kernel):
    outputs = tf.nn.conv3d(inputs, kernel, _STRIDES, "SAME")

    def grad(grad_output):
        grad_input = tf.raw_ops.Conv3DBackpropInputV2(input_sizes=tf.shape(inputs), filter=kernel,
                                                      out_backprop=grad_output, strides=_STRIDES, padding="SAME")
        first, k = inputs.shape[1], int(kernel.shape[0])
        if first is not None:
            grad_kernel = _filter_gradient(inputs, kernel, grad_output, in_float32=True)
        else:  # unknown at trace time: decide per call
            n = tf.shape(inputs)[1]
            grad_kernel = tf.cond(tf.logical_and(n > 1, n < k),
                                  lambda: _filter_gradient(inputs, kernel, grad_output, in_float32=True),
                                  lambda: _filter_gradient(inputs, kernel, grad_output, in_float32=False))
        return grad_input, grad_kernel

    return outputs, grad


def conv3d_same(inputs, kernel):
    """``tf.nn.conv3d(inputs, kernel, strides 1, "SAME")``, with the filter gradient taken in float32 where
    oneDNN's bf16 kernel is wrong (`filter_gradient_needs_float32`). Same forward result in every case.

    Args:
        inputs: ``[B, H, W, D, C]`` tensor.
        kernel: ``[k, k, k, C, F]`` tensor of the inputs' dtype.
    """
    if filter_gradient_needs_float32(inputs.shape[1], int(kernel.shape[0]), inputs.dtype):
        return _conv3d_float32_filter_gradient(inputs, kernel)
    return tf.nn.conv3d(inputs, kernel, _STRIDES, "SAME")
