"""conv3d_same: the stride-1 "SAME" convolution whose bf16 filter gradient avoids oneDNN's faulty kernel."""

import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf.models.safe_conv3d import conv3d_same, filter_gradient_needs_float32


@pytest.mark.parametrize("first_axis, kernel, dtype, expected", [
    (2, 3, tf.bfloat16, True), (4, 5, tf.bfloat16, True), (None, 3, tf.bfloat16, True),
    (1, 3, tf.bfloat16, False), (3, 3, tf.bfloat16, False), (7, 3, tf.bfloat16, False),
    (2, 3, tf.float32, False), (2, 3, tf.float16, False), (2, 2, tf.bfloat16, False), (1, 1, tf.bfloat16, False),
])
def test_which_convolutions_take_the_float32_filter_gradient(first_axis, kernel, dtype, expected):
    assert filter_gradient_needs_float32(first_axis, kernel, dtype) is expected


def _value_and_grads(x, w, signature=None):
    def f(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = conv3d_same(x, w)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.linspace(-1.0, 1.0, y.shape[-1]))
        return (y, *tape.gradient(loss, [x, w]))
    return tf.function(f, input_signature=signature)(x, w)


@pytest.mark.parametrize("shape", [(2, 2, 4, 4, 8), (2, 2, 1, 3, 8), (2, 4, 5, 3, 8)])
@pytest.mark.parametrize("dynamic", [False, True])
def test_bf16_value_and_gradients_match_float32(shape, dynamic):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=shape), 0).astype(np.float32)
    w = (rng.normal(size=(3, 3, 3, shape[-1], 8)) * 0.1).astype(np.float32)
    y32, dx32, dw32 = _value_and_grads(tf.constant(x), tf.constant(w))
    signature = None
    if dynamic:  # sizes unknown at trace time: the choice is made at run time
        signature = [tf.TensorSpec([None, None, None, None, shape[-1]], tf.bfloat16),
                     tf.TensorSpec(w.shape, tf.bfloat16)]
    y, dx, dw = _value_and_grads(tf.constant(x, tf.bfloat16), tf.constant(w, tf.bfloat16), signature)
    for name, a, b in (("output", y, y32), ("input gradient", dx, dx32), ("filter gradient", dw, dw32)):
        a = tf.cast(a, tf.float32).numpy()
        assert np.isfinite(a).all(), name
        # bf16 has 8 bits of mantissa: ~1 % of the largest value for sums of a few hundred terms
        np.testing.assert_allclose(a, b.numpy(), atol=0.02 * np.abs(b.numpy()).max(), err_msg=name)


def test_float32_is_plain_conv3d():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(1, 2, 4, 4, 2)), tf.float32)
    w = tf.constant(rng.normal(size=(3, 3, 3, 2, 3)), tf.float32)
    np.testing.assert_array_equal(conv3d_same(x, w).numpy(), tf.nn.conv3d(x, w, [1] * 5, "SAME").numpy())


@pytest.mark.parametrize("shape, dtype, cpu_kind, expected", [
    ((4, 112, 112, 80, 16), tf.bfloat16, True, True),   # the V-Net's full-resolution level: 16.1 M per sample
    ((None, 112, 112, 80, 16), tf.bfloat16, True, True),
    ((4, 96, 96, 64, 16), tf.bfloat16, True, False),    # 9.4 M: measured at parity
    ((4, 112, 112, 80, 1), tf.bfloat16, True, False),   # the first conv's input
    ((4, 112, 112, 80, 16), tf.float32, True, False),
    ((4, 112, 112, 80, 16), tf.bfloat16, False, False),  # AMX, AVX2 or a GPU: not measured, the layer's own kernel
    ((4, None, 112, 80, 16), tf.bfloat16, True, False),
])
def test_which_filter_gradients_are_faster_in_float32(shape, dtype, cpu_kind, expected, monkeypatch):
    import sassnet_tf.models.safe_conv3d as safe_conv3d

    monkeypatch.setattr(safe_conv3d, "_bf16_without_amx", lambda: cpu_kind)
    assert safe_conv3d.slow_bf16_filter_gradient(shape, dtype) is expected


def test_float32_filter_gradient_convs_in_bf16_match_float32():
    from sassnet_tf.models.safe_conv3d import conv3d_float32_filter_gradient, conv3d_transpose_float32_filter_gradient

    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 8, 6, 4, 8)).astype(np.float32)
    cases = [
        (lambda x, w: conv3d_float32_filter_gradient(x, w, 1, "SAME"), lambda x, w: tf.nn.conv3d(x, w, [1] * 5, "SAME"),
         (3, 3, 3, 8, 4)),
        (lambda x, w: conv3d_float32_filter_gradient(x, w, 2, "VALID"),
         lambda x, w: tf.nn.conv3d(x, w, [1, 2, 2, 2, 1], "VALID"), (2, 2, 2, 8, 4)),
        (lambda x, w: conv3d_transpose_float32_filter_gradient(x, w, 2),
         lambda x, w: tf.nn.conv3d_transpose(x, w, [2, 16, 12, 8, 4], [1, 2, 2, 2, 1], "VALID"), (2, 2, 2, 4, 8)),
    ]
    for fn, reference, kernel_shape in cases:
        w = (rng.normal(size=kernel_shape) * 0.2).astype(np.float32)
        out = []
        for f, dtype in ((reference, tf.float32), (fn, tf.bfloat16)):
            xt, wt = tf.constant(x, dtype), tf.constant(w, dtype)
            with tf.GradientTape() as tape:
                tape.watch([xt, wt])
                y = f(xt, wt)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.linspace(-1.0, 1.0, y.shape[-1]))
            out.append([tf.cast(t, tf.float32).numpy() for t in (y, *tape.gradient(loss, [xt, wt]))])
        assert out[1][0].shape == out[0][0].shape
        for got, want in zip(out[1], out[0]):  # bf16 inputs and products: ~1 % of the largest value
            np.testing.assert_allclose(got, want, atol=0.03 * np.abs(want).max())
