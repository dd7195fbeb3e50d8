"""ConvBlock, DownBlock, UpBlock: shapes, normalisation layers, validation, config."""

import keras
import numpy as np
import pytest

from sassnet_tf.models.conv_block import ConvBlock
from sassnet_tf.models.down_block import DownBlock
from sassnet_tf.models.fused_batch_norm import FusedBatchNorm
from sassnet_tf.models.up_block import UpBlock


@pytest.mark.parametrize("block,in_shape,out_shape", [
    (ConvBlock(6, n_convs=2), (2, 8, 8, 4, 3), (2, 8, 8, 4, 6)),
    (DownBlock(6), (2, 8, 8, 4, 3), (2, 4, 4, 2, 6)),
    (UpBlock(6), (2, 8, 8, 4, 3), (2, 16, 16, 8, 6)),
])
def test_shapes_and_relu(block, in_shape, out_shape):
    x = np.random.default_rng(0).normal(size=in_shape).astype(np.float32)
    y = block(x, training=True).numpy()
    assert y.shape == out_shape
    assert tuple(block.compute_output_shape(in_shape)) == out_shape
    assert y.min() == 0.0 and y.max() > 0.0  # ReLU output


@pytest.mark.parametrize("normalization,layer_type", [
    ("batchnorm", FusedBatchNorm), ("groupnorm", keras.layers.GroupNormalization),
    ("instancenorm", keras.layers.GroupNormalization)])
def test_normalization_layers(normalization, layer_type):
    block = ConvBlock(8, n_convs=2, normalization=normalization)
    block.build((None, None, None, None, 2))
    assert len(block.norms) == 2 and all(isinstance(n, layer_type) for n in block.norms)
    assert all(n.epsilon == 1e-5 for n in block.norms)
    if normalization == "batchnorm":
        assert block.norms[0].momentum == 0.9  # torch momentum 0.1
    if normalization == "groupnorm":
        assert block.norms[0].groups == 8  # gcd(16, 8)
    if normalization == "instancenorm":
        assert block.norms[0].trainable_weights == []  # torch InstanceNorm3d: no affine


def test_instance_norm_normalises_each_channel_of_each_sample():
    block = ConvBlock(4, normalization="instancenorm")
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(2, 8, 8, 8, 1)).astype(np.float32)
    block(x)
    conv_out = block.convs[0](x)
    normed = block.norms[0](conv_out).numpy()
    np.testing.assert_allclose(normed.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(normed.std(axis=(1, 2, 3)), 1.0, atol=1e-2)


def test_none_has_no_normalization():
    assert ConvBlock(4, normalization="none").norms == []
    assert DownBlock(4, normalization="none").norm is None


@pytest.mark.parametrize("make,match", [
    (lambda: ConvBlock(0), "ConvBlock: filters must be a positive integer"),
    (lambda: ConvBlock(4, n_convs=0), "ConvBlock: n_convs must be a positive integer"),
    (lambda: DownBlock(4, normalization="bn"), "DownBlock: normalization 'bn' is not one of"),
    (lambda: UpBlock(2.5), "UpBlock: filters must be a positive integer"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("block", [ConvBlock(4, 3, "groupnorm"), DownBlock(8, "none"), UpBlock(2, "instancenorm")])
def test_config_round_trip(block):
    clone = type(block).from_config(block.get_config())
    assert clone.get_config() == block.get_config()
