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

The same CPUs' bf16 backward-weights kernels are also slow on large activations: on the V-Net's full-resolution
level (16 channels at 112x112x80, batch 4) the bf16 filter gradient of the 3x3x3 16 -> 16 conv took 0.40 s in every
profiled training step, where float32, casts included, takes 0.16-0.19 s (alone, the bf16 kernel varies from 0.13 to
0.38 s between runs); the 2x2x2 stride-2 ones 0.06-0.16 s vs 0.04 s. On small activations bf16 is as fast or faster
(`bench/bench_filter_gradient.py`, docs/PERFORMANCE.md, session 14). So there, too, the filter gradient is taken in
float32 (`slow_bf16_filter_gradient`): a kernel choice, which only makes the gradient more exact.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from sassnet_tf.utils.runtime import cpu_kind

_STRIDES = [1, 1, 1, 1, 1]
# Per-sample elements of the filter gradient's activation (the conv's input, or a transposed conv's output) from which
# the bf16 kernel is slower than float32 on AVX512-BF16 CPUs without AMX: 112x112x80x16 = 16.1 M is slow, <= 8 M is
# not, 9.4 M is at parity.
SLOW_BF16_FILTER_GRADIENT_ELEMENTS = 12 * 2**20


@functools.lru_cache(maxsize=1)
def _bf16_without_amx() -> bool:
    """Whether this process's CPU has AVX512-BF16 but no AMX and no GPU is visible (the measured kind)."""
    return cpu_kind() == "avx512_bf16" and not tf.config.list_physical_devices("GPU")


def slow_bf16_filter_gradient(activation_shape, dtype) -> bool:
    """Whether a bf16 filter gradient reading an activation of `activation_shape` is faster in float32 here.

    Args:
        activation_shape: ``[B, H, W, D, C]`` static shape of the activation the filter gradient reads (the conv's
            input; for a transposed conv its output); None entries (unknown at trace time) give False.
        dtype: the compute dtype of the convolution.
    """
    if tf.as_dtype(dtype) != tf.bfloat16 or not _bf16_without_amx():
        return False
    dims = list(activation_shape)[1:]
    if len(dims) != 4 or any(d is None for d in dims):
        return False
    return dims[0] * dims[1] * dims[2] * dims[3] >= SLOW_BF16_FILTER_GRADIENT_ELEMENTS


def _filter_gradient(inputs, kernel, grad_output, in_float32: bool, strides=_STRIDES, padding="SAME"):
    """A conv's filter gradient (``Conv3DBackpropFilterV2``), in float32 when asked, returned in the kernel's dtype."""
    if in_float32:
        inputs, grad_output = tf.cast(inputs, tf.float32), tf.cast(grad_output, tf.float32)
    grad = tf.raw_ops.Conv3DBackpropFilterV2(input=inputs, filter_sizes=tf.shape(kernel), out_backprop=grad_output,
                                             strides=strides, padding=padding)
    return tf.cast(grad, kernel.dtype)


def conv3d_float32_filter_gradient(inputs, kernel, strides=1, padding="SAME", float32_when=None):
    """``tf.nn.conv3d`` whose filter gradient is computed in float32 (the input gradient stays in the inputs' dtype).

    Args:
        inputs: ``[B, H, W, D, C]`` tensor.
        kernel: ``[k, k, k, C, F]`` tensor of the inputs' dtype.
        strides: the stride on every spatial axis.
        padding: "SAME" or "VALID".
        float32_when: None (always float32), or a function of the inputs giving a scalar bool tensor: the filter
            gradient is float32 in the calls where it is True, the inputs' dtype otherwise (sizes unknown at trace
            time).
    """
    stride5 = [1, strides, strides, strides, 1]

    @tf.custom_gradient
    def conv(x, k):
        def grad(dy):
            dx = tf.raw_ops.Conv3DBackpropInputV2(input_sizes=tf.shape(x), filter=k, out_backprop=dy,
                                                  strides=stride5, padding=padding)
            if float32_when is None:
                dk = _filter_gradient(x, k, dy, True, stride5, padding)
            else:
                dk = tf.cond(float32_when(x), lambda: _filter_gradient(x, k, dy, True, stride5, padding),
                             lambda: _filter_gradient(x, k, dy, False, stride5, padding))
            return dx, dk

        return tf.nn.conv3d(x, k, stride5, padding), grad

    return conv(inputs, kernel)


def conv3d_transpose_float32_filter_gradient(inputs, kernel, strides):
    """A "VALID" ``tf.nn.conv3d_transpose`` (kernel ``[k, k, k, F, C]``, Keras' Conv3DTranspose layout) whose filter
    gradient is computed in float32; output size ``(n - 1) * s + k`` per axis.

    Args:
        inputs: ``[B, H, W, D, C]`` tensor.
        kernel: ``[k, k, k, F, C]`` tensor of the inputs' dtype.
        strides: the stride on every spatial axis.
    """
    stride5 = [1, strides, strides, strides, 1]

    @tf.custom_gradient
    def conv_transpose(x, k):
        size = tf.shape(x)
        spatial = (size[1:4] - 1) * strides + tf.shape(k)[:3]
        output_shape = tf.concat([size[:1], spatial, tf.shape(k)[3:4]], axis=0)
        y = tf.nn.conv3d_transpose(x, k, output_shape, stride5, "VALID")
        ksize = k.shape[:3]
        y.set_shape([x.shape[0]] + [None if n is None or m is None else (n - 1) * strides + m
                                    for n, m in zip(x.shape[1:4], ksize)] + [k.shape[3]])

        def grad(dy):
            dx = tf.nn.conv3d(dy, k, stride5, "VALID")
            # The transposed conv's filter gradient is a conv's with input and output swapped.
            return dx, _filter_gradient(dy, k, x, True, stride5, "VALID")

        return y, grad

    return conv_transpose(inputs, kernel)


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


def conv3d_same(inputs, kernel):
    """``tf.nn.conv3d(inputs, kernel, strides 1, "SAME")``, with the filter gradient taken in float32 where
    oneDNN's bf16 kernel is wrong (`filter_gradient_needs_float32`). Same forward result in every case.

    Args:
        inputs: ``[B, H, W, D, C]`` tensor.
        kernel: ``[k, k, k, C, F]`` tensor of the inputs' dtype.
    """
    k = int(kernel.shape[0])
    if not filter_gradient_needs_float32(inputs.shape[1], k, inputs.dtype):
        return tf.nn.conv3d(inputs, kernel, _STRIDES, "SAME")
    if inputs.shape[1] is not None:
        return conv3d_float32_filter_gradient(inputs, kernel)

    def faulty_length(x):  # unknown at trace time: decide per call
        n = tf.shape(x)[1]
        return tf.logical_and(n > 1, n < k)

    return conv3d_float32_filter_gradient(inputs, kernel, float32_when=faulty_length)
