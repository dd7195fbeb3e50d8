"""resize_linear: the trilinear upsampling of probability and SDM maps back to the scan's grid."""

import numpy as np

from sassnet_tf.inference.resample import resize_linear


def test_resize_linear_inverts_strided_downsampling_of_a_ramp():
    x, y, z = np.meshgrid(np.arange(20), np.arange(14), np.arange(9), indexing="ij")
    ramp = (0.5 * x + 2.0 * y - 1.0 * z).astype(np.float32)
    low = ramp[::2, ::2, ::2]  # shape (10, 7, 5): full voxel 2i is low voxel i
    up = resize_linear(low, ramp.shape, factor=2)
    assert up.shape == ramp.shape and up.dtype == np.float32
    # Exact wherever the position lies between two low-resolution samples; the last odd voxel is clamped.
    np.testing.assert_allclose(up[:19, :13, :9], ramp[:19, :13, :9], atol=1e-5)
    np.testing.assert_allclose(up[19], up[18] + 0.0, atol=1e-5)  # 19 / 2 = 9.5 > last sample 9: clamped to it


def test_resize_linear_half_pixel_keeps_constants_and_mean():
    const = np.full((4, 5, 3), 0.7, np.float32)
    np.testing.assert_allclose(resize_linear(const, (9, 11, 6)), 0.7, atol=1e-6)
    step = np.zeros((4, 1, 1), np.float32)
    step[2:] = 1.0
    up = resize_linear(step, (8, 1, 1))[:, 0, 0]
    np.testing.assert_allclose(up, [0, 0, 0, 0.25, 0.75, 1, 1, 1], atol=1e-6)
