"""space_to_depth_conv3d and strided_conv3d: equal to the padded strided tf.nn.conv3d (values and gradients), any size,
any dtype."""

import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf.models import space_to_depth_conv
from sassnet_tf.models.space_to_depth_conv import space_to_depth_conv3d, strided_conv3d
from tests.models.conftest import conv3d


def strided_reference(x, kernel, strides, padding):
    p = padding
    return tf.nn.conv3d(tf.pad(x, [[0, 0], [p, p], [p, p], [p, p], [0, 0]]), kernel, [1, strides, strides, strides, 1],
                        "VALID")


def loss_and_grads(fn, x, kernel):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = fn(x, kernel)
        # Random output weights: every output voxel gets its own gradient.
        loss = tf.reduce_sum(y * tf.random.stateless_normal(tf.shape(y), seed=[1, 2]))
    return y, tape.gradient(loss, [x, kernel])


@pytest.mark.parametrize("shape,filters,kernel_size,strides,padding", [
    ((2, 16, 16, 16, 1), 4, 4, 2, 1),
    ((1, 17, 19, 21, 3), 5, 4, 2, 1),  # odd sizes: the last voxel is dropped as by torch
    ((2, 9, 10, 11, 2), 3, 4, 2, 1),
    ((1, 18, 12, 10, 2), 3, 4, 2, 0),
    ((1, 13, 14, 15, 2), 2, 6, 3, 2),  # another stride dividing the kernel
    ((1, 8, 9, 10, 2), 3, 2, 2, 0),    # kernel == stride: a pure space-to-depth matmul
])
def test_equals_strided_conv_values_and_gradients(shape, filters, kernel_size, strides, padding):
    rng = np.random.default_rng(sum(shape))
    x = tf.constant(rng.normal(size=shape), tf.float32)
    kernel = tf.constant(rng.normal(size=(kernel_size,) * 3 + (shape[-1], filters)), tf.float32)
    y, grads = loss_and_grads(lambda a, w: space_to_depth_conv3d(a, w, strides, padding), x, kernel)
    y_ref, grads_ref = loss_and_grads(lambda a, w: strided_reference(a, w, strides, padding), x, kernel)
    assert y.shape == y_ref.shape
    expected = [(n + 2 * padding - kernel_size) // strides + 1 for n in shape[1:4]]
    assert list(y.shape[1:4]) == expected
    np.testing.assert_allclose(y, y_ref, atol=1e-5 * float(tf.reduce_max(tf.abs(y_ref))))
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, atol=1e-5 * float(tf.reduce_max(tf.abs(g_ref))))


def test_matches_numpy_torch_conv():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 11, 12, 13, 2))
    kernel = rng.normal(size=(4, 4, 4, 2, 3))
    y = space_to_depth_conv3d(tf.constant(x, tf.float32), tf.constant(kernel, tf.float32)).numpy()
    np.testing.assert_allclose(y[0], conv3d(x[0], kernel, 0.0, stride=2, pad=1), rtol=1e-4, atol=1e-4)


def test_unknown_spatial_sizes_inside_a_graph():
    fn = tf.function(lambda a, w: space_to_depth_conv3d(a, w),
                     input_signature=[tf.TensorSpec([None, None, None, None, 2]), tf.TensorSpec([4, 4, 4, 2, 3])])
    rng = np.random.default_rng(4)
    kernel = tf.constant(rng.normal(size=(4, 4, 4, 2, 3)), tf.float32)
    for shape in ((1, 16, 17, 18, 2), (2, 21, 10, 9, 2)):
        x = tf.constant(rng.normal(size=shape), tf.float32)
        np.testing.assert_allclose(fn(x, kernel), strided_reference(x, kernel, 2, 1), atol=1e-4)


def test_bfloat16_inputs_cast_the_kernel():
    x = tf.ones((1, 8, 8, 8, 1), tf.bfloat16)
    y = space_to_depth_conv3d(x, tf.ones((4, 4, 4, 1, 2), tf.float32))
    assert y.dtype == tf.bfloat16 and y.shape == (1, 4, 4, 4, 2)
    assert float(y[0, 1, 1, 1, 0]) == 64.0  # an interior window sums 4^3 ones


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,match", [
    ((1, 8, 8, 8, 1), (4, 4, 3, 1, 2), 2, 1, "kernel must be"),
    ((1, 8, 8, 8, 1), (4, 4, 4, 1, 2), 3, 1, "stride >= 1 dividing the kernel size 4"),
    ((1, 8, 8, 8, 1), (4, 4, 4, 1, 2), 2, -1, "padding >= 0"),
    ((1, 8, 8, 8, 2), (4, 4, 4, 1, 2), 2, 1, "inputs have 2 channels, the kernel expects 1"),
    ((8, 8, 8, 1), (4, 4, 4, 1, 2), 2, 1, r"inputs must be \[B, H, W, D, C\]"),
])
def test_bad_arguments(x_shape, kernel_shape, strides, padding, match):
    with pytest.raises(ValueError, match=match):
        space_to_depth_conv3d(tf.zeros(x_shape), tf.zeros(kernel_shape), strides, padding)


@pytest.mark.parametrize("method", ["auto", "space_to_depth", "direct"])
@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("channels", [1, 9])  # below and above the space-to-depth threshold under oneDNN
@pytest.mark.parametrize("size", [(11, 10, 9), (12, 10, 8)])  # "direct": explicit Pad (odd), "SAME" (all even)
def test_strided_conv3d_every_method_equals_the_reference(monkeypatch, method, onednn, channels, size):
    monkeypatch.setattr(space_to_depth_conv, "onednn_enabled", lambda: onednn)
    rng = np.random.default_rng(channels)
    x = tf.constant(rng.normal(size=(1, *size, channels)), tf.float32)
    kernel = tf.constant(rng.normal(size=(4, 4, 4, channels, 3)), tf.float32)
    y, grads = loss_and_grads(lambda a, w: strided_conv3d(a, w, 2, 1, method), x, kernel)
    y_ref, grads_ref = loss_and_grads(lambda a, w: strided_reference(a, w, 2, 1), x, kernel)
    for got, want in zip([y] + grads, [y_ref] + grads_ref):
        np.testing.assert_allclose(got, want, atol=1e-5 * float(tf.reduce_max(tf.abs(want))))


def test_strided_conv3d_auto_choice(monkeypatch):
    """auto: space-to-depth without oneDNN or on few channels; never for a kernel the stride does not divide."""
    calls = []
    monkeypatch.setattr(space_to_depth_conv, "space_to_depth_conv3d", lambda *a: calls.append("s2d") or a[0])
    for onednn, channels, kernel_size, expected in ((False, 16, 4, ["s2d"]), (True, 1, 4, ["s2d"]),
                                                    (True, 16, 4, []), (False, 4, 3, [])):
        calls.clear()
        monkeypatch.setattr(space_to_depth_conv, "onednn_enabled", lambda: onednn)
        x = tf.zeros((1, 8, 8, 8, channels))
        strided_conv3d(x, tf.zeros((kernel_size,) * 3 + (channels, 2)), 2, 1)
        assert calls == expected, (onednn, channels, kernel_size)


def test_strided_conv3d_rejects_unknown_methods():
    with pytest.raises(ValueError, match="method 'im2col' is not one of auto, space_to_depth, direct"):
        strided_conv3d(tf.zeros((1, 8, 8, 8, 1)), tf.zeros((4, 4, 4, 1, 2)), method="im2col")


@pytest.mark.parametrize("sizes,k,s,p,expected", [
    ((64, 64, 48), 4, 2, 1, True),   # the discriminator's layers on even sizes
    ((14, 14, 10), 4, 2, 1, True),
    ((64, 63, 48), 4, 2, 1, False),  # odd: "SAME" gives ceil(n / 2) and pads 1 before, 2 after
    ((64, 64, 48), 4, 2, 0, False),
    ((9, 9, 9), 3, 1, 1, True),      # stride 1, kernel 3: "SAME" is torch padding 1 on any size
    ((8, None, 8), 4, 2, 1, False),  # unknown size: no decision possible, explicit Pad
])
def test_same_padding_matches(sizes, k, s, p, expected):
    assert space_to_depth_conv.same_padding_matches(sizes, k, s, p) is expected


def test_direct_method_pads_with_same_instead_of_a_pad_op_where_equal():
    """No Pad op before the conv on even sizes: Grappler's Pad + Conv3D fusion breaks the filter gradient's graph."""
    def ops(shape):
        fn = tf.function(lambda x: strided_conv3d(x, tf.ones((4, 4, 4, 9, 2)), 2, 1, "direct"))
        return {op.type for op in fn.get_concrete_function(tf.TensorSpec(shape)).graph.get_operations()}

    assert "Pad" not in ops((1, 8, 8, 8, 9)) and "Pad" in ops((1, 8, 9, 8, 9)) and "Pad" in ops((1, None, 8, 8, 9))
