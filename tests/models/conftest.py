"""Fixtures of the network tests: a dtype policy restored after each test, and a numpy torch-style conv."""

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view


@pytest.fixture
def policy():
    """Set a global dtype policy for one test; the float32 default comes back afterwards whatever happens."""
    previous = keras.mixed_precision.dtype_policy().name

    def set_policy(name):
        keras.mixed_precision.set_dtype_policy(name)

    yield set_policy
    keras.mixed_precision.set_dtype_policy(previous)


def conv3d(x, kernel, bias, stride=1, pad=0):
    """torch Conv3d on one channels-last volume x [H, W, D, C] with a Keras kernel [k, k, k, C, F]."""
    k = kernel.shape[0]
    if pad:
        x = np.pad(x, ((pad, pad), (pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(x, (k, k, k), axis=(0, 1, 2))[::stride, ::stride, ::stride]
    return np.einsum("xyzcijk,ijkcf->xyzf", windows, kernel, optimize=True) + bias


def conv3d_transpose_2x2x2(x, kernel, bias):
    """torch ConvTranspose3d(kernel 2, stride 2) on x [H, W, D, C] with a Keras kernel [2, 2, 2, F, C]."""
    h, w, d, _ = x.shape
    out = np.zeros((2 * h, 2 * w, 2 * d, kernel.shape[3]), dtype=np.float64)
    for a in range(2):
        for b in range(2):
            for c in range(2):
                out[a::2, b::2, c::2] = np.einsum("xyzc,fc->xyzf", x, kernel[a, b, c])
    return out + bias
