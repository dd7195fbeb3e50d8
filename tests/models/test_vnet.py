"""The dual-head V-Net: parameter counts, the exact forward pass, precision, dropout, sizes, serialisation."""

import keras
import numpy as np
import pytest

from sassnet_tf.models import VNet, build_vnet
from tests.models.conftest import conv3d, conv3d_transpose_2x2x2


def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def expected_trainable(n, norm_params_per_channel):
    """Parameter count of the reference architecture written out: convs with biases, norms, two 1x1x1 heads."""
    total = 0

    def conv(c_in, c_out, k):
        nonlocal total
        total += k ** 3 * c_in * c_out + c_out + norm_params_per_channel * c_out

    c = 1
    for width, n_convs in ((n, 1), (2 * n, 2), (4 * n, 3), (8 * n, 3), (16 * n, 3)):
        if width != n:
            conv(c, width, 2)  # down
            c = width
        for _ in range(n_convs):
            conv(c, width, 3)
            c = width
    for width, n_convs in ((8 * n, 3), (4 * n, 3), (2 * n, 2), (n, 1)):
        conv(c, width, 2)  # up
        c = width
        for _ in range(n_convs):
            conv(c, width, 3)
    return total + 2 * (n + 1)


def test_reference_parameter_count():
    vnet = build_vnet(16)
    assert count(vnet.trainable_weights) == 9_448_866
    assert count(vnet.trainable_weights) == expected_trainable(16, 2)
    assert count(vnet.non_trainable_weights) == 5_600  # BN moving mean and variance


@pytest.mark.parametrize("normalization,per_channel,moving", [
    ("groupnorm", 2, 0), ("instancenorm", 0, 0), ("none", 0, 0), ("batchnorm", 2, 2)])
def test_parameter_counts_of_the_options(normalization, per_channel, moving):
    vnet = build_vnet(4, normalization=normalization)
    assert count(vnet.trainable_weights) == expected_trainable(4, per_channel)
    norm_channels = (expected_trainable(4, 1) - expected_trainable(4, 0))
    assert count(vnet.non_trainable_weights) == moving * norm_channels


def test_groupnorm_uses_16_groups_at_reference_width():
    vnet = VNet(16, normalization="groupnorm")
    assert {norm.groups for block in (vnet.block_1, vnet.block_5) for norm in block.norms} == {16}


def numpy_forward(vnet, x):
    """The reference forward pass (inference mode, batchnorm) written in numpy from the model's weights."""

    def norm_relu(y, bn):
        gamma, beta, mean, var = (w.numpy().astype(np.float64) for w in bn.weights)
        return np.maximum((y - mean) / np.sqrt(var + 1e-5) * gamma + beta, 0.0)

    def block(y, blk):
        for conv, bn in zip(blk.convs, blk.norms):
            y = norm_relu(conv3d(y, conv.kernel.numpy(), conv.bias.numpy(), pad=1), bn)
        return y

    def down(y, blk):
        return norm_relu(conv3d(y, blk.conv.kernel.numpy(), blk.conv.bias.numpy(), stride=2), blk.norm)

    def up(y, blk):
        return norm_relu(conv3d_transpose_2x2x2(y, blk.conv.kernel.numpy(), blk.conv.bias.numpy()), blk.norm)

    x1 = block(x, vnet.block_1)
    x2 = block(down(x1, vnet.down_1), vnet.block_2)
    x3 = block(down(x2, vnet.down_2), vnet.block_3)
    x4 = block(down(x3, vnet.down_3), vnet.block_4)
    x5 = block(down(x4, vnet.down_4), vnet.block_5)
    x6 = block(up(x5, vnet.up_5) + x4, vnet.block_6)
    x7 = block(up(x6, vnet.up_6) + x3, vnet.block_7)
    x8 = block(up(x7, vnet.up_7) + x2, vnet.block_8)
    x9 = block(up(x8, vnet.up_8) + x1, vnet.block_9)
    seg = conv3d(x9, vnet.seg_head.kernel.numpy(), vnet.seg_head.bias.numpy())
    sdm = np.tanh(conv3d(x9, vnet.sdm_head.kernel.numpy(), vnet.sdm_head.bias.numpy()))
    return seg, sdm


def test_forward_matches_the_reference_architecture():
    keras.utils.set_random_seed(0)
    vnet = build_vnet(2)
    rng = np.random.default_rng(0)
    # Non-trivial BN statistics and affine parameters so that their use is checked too.
    for w in vnet.weights:
        if "moving_variance" in w.path or "gamma" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        elif "moving_mean" in w.path or "beta" in w.path:
            w.assign(rng.normal(0.0, 0.1, w.shape))
    x = rng.normal(size=(1, 16, 32, 16, 1)).astype(np.float32)
    out = vnet(x, training=False)
    seg, sdm = numpy_forward(vnet, x[0].astype(np.float64))
    np.testing.assert_allclose(out["seg"].numpy()[0], seg, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["sdm"].numpy()[0], sdm, rtol=1e-4, atol=1e-4)
    assert np.abs(seg).max() > 1e-2  # the comparison is not between two near-zero maps


def test_outputs_are_float32_under_mixed_bfloat16(policy):
    policy("mixed_bfloat16")
    vnet = build_vnet(2)
    assert vnet.block_1.convs[0].compute_dtype == "bfloat16"  # the policy did take effect inside
    assert vnet.seg_head.compute_dtype == "float32" and vnet.sdm_head.compute_dtype == "float32"
    out = vnet(np.random.default_rng(0).normal(size=(2, 32, 32, 16, 1)).astype(np.float32), training=True)
    assert set(out) == {"seg", "sdm"}
    for value in out.values():
        assert tuple(value.shape) == (2, 32, 32, 16, 1)
        assert value.dtype == "float32"
    assert np.all(np.abs(out["sdm"].numpy()) <= 1.0)


def test_outputs_are_float32_under_mixed_float16(policy):
    policy("mixed_float16")
    out = build_vnet(2, normalization="groupnorm")(np.zeros((1, 16, 16, 16, 1), np.float32), training=False)
    assert out["seg"].dtype == "float32" and out["sdm"].dtype == "float32"


def test_dropout_acts_in_training_only():
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 16, 1)).astype(np.float32)
    # Without normalisation, dropout is the only difference between the modes.
    vnet = build_vnet(4, normalization="none", dropout=0.5)
    a, b = vnet(x, training=False), vnet(x, training=False)
    np.testing.assert_array_equal(a["seg"], b["seg"])
    np.testing.assert_allclose(vnet(x)["seg"], a["seg"], rtol=1e-6, atol=1e-6)  # default is inference
    trained = vnet(x, training=True)
    assert np.abs(trained["seg"].numpy() - a["seg"].numpy()).max() > 1e-4
    no_dropout = build_vnet(4, normalization="none", dropout=0.0)
    np.testing.assert_allclose(no_dropout(x, training=True)["seg"], no_dropout(x, training=False)["seg"],
                               rtol=1e-5, atol=1e-6)


def test_dropout_is_channel_wise():
    vnet = build_vnet(4, normalization="none")
    for layer in (vnet.bottleneck_dropout, vnet.decoder_dropout):
        assert isinstance(layer, keras.layers.SpatialDropout3D) and layer.rate == 0.5
    features = np.ones((2, 4, 4, 2, 16), np.float32)
    dropped = vnet.decoder_dropout(features, training=True).numpy()
    per_channel = dropped.reshape(2, -1, 16)
    assert np.all(per_channel.min(axis=1) == per_channel.max(axis=1))  # a channel is kept or dropped whole
    assert set(np.unique(dropped)) <= {0.0, 2.0}


def test_other_patch_sizes_share_one_model():
    vnet = build_vnet(2)
    for shape in ((1, 48, 32, 16, 1), (2, 32, 16, 48, 1)):
        out = vnet(np.zeros(shape, np.float32), training=False)
        assert tuple(out["seg"].shape) == shape[:4] + (1,)


@pytest.mark.parametrize("shape,match", [
    ((1, 40, 32, 16, 1), "axis H is 40, expected a positive multiple of 16"),
    ((1, 32, 32, 16, 2), "expected 1 input channel"),
    ((32, 32, 16, 1), r"expected input \[batch, H, W, D, 1\]"),
])
def test_bad_inputs_are_rejected(shape, match):
    with pytest.raises(ValueError, match=match):
        build_vnet(2)(np.zeros(shape, np.float32))


@pytest.mark.parametrize("kwargs,match", [
    ({"normalization": "layernorm"}, "not one of batchnorm, groupnorm, instancenorm, none"),
    ({"n_filters": 0}, "n_filters must be a positive integer"),
    ({"dropout": 1.0}, r"dropout must be a rate in \[0, 1\)"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VNet(**kwargs)


def test_config_round_trip(policy):
    policy("mixed_bfloat16")
    vnet = build_vnet(4, normalization="groupnorm", dropout=0.25, name="net")
    policy("float32")
    config = vnet.get_config()
    assert {k: config[k] for k in ("n_filters", "normalization", "dropout", "in_channels")} == {
        "n_filters": 4, "normalization": "groupnorm", "dropout": 0.25, "in_channels": 1}
    clone = VNet.from_config(config)
    assert clone.get_config() == config
    assert clone.dtype_policy.name == "mixed_bfloat16" and clone.block_3.convs[0].compute_dtype == "bfloat16"
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vnet))
    assert type(revived) is VNet and revived.get_config() == config
    assert revived.built  # the serialised form carries the build shape
    assert count(revived.trainable_weights) == count(vnet.trainable_weights)
    for block in (vnet.block_2, vnet.down_2, vnet.up_6):
        twin = type(block).from_config(block.get_config())
        assert twin.get_config() == block.get_config()


def test_weights_round_trip(tmp_path):
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 16, 1)).astype(np.float32)
    vnet = build_vnet(2)
    vnet(x, training=True)  # moves the BN statistics away from their initial values: they must be saved too
    path = str(tmp_path / "vnet.weights.h5")
    vnet.save_weights(path)
    other = build_vnet(2)
    other.load_weights(path)
    for key in ("seg", "sdm"):
        np.testing.assert_array_equal(other(x, training=False)[key], vnet(x, training=False)[key])
    with pytest.raises(ValueError):
        build_vnet(4).load_weights(path)


def test_keras_file_round_trip(tmp_path):
    x = np.random.default_rng(3).normal(size=(1, 16, 16, 16, 1)).astype(np.float32)
    vnet = build_vnet(2, normalization="instancenorm")
    path = str(tmp_path / "vnet.keras")
    vnet.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is VNet
    np.testing.assert_array_equal(loaded(x)["sdm"], vnet(x)["sdm"])


def test_initialisation_follows_torch_defaults():
    vnet = build_vnet(16)
    kernel = vnet.block_5.convs[0].kernel.numpy()  # fan_in 256 * 27: bound 1 / sqrt(6912)
    bound = 1.0 / np.sqrt(256 * 27)
    assert np.abs(kernel).max() <= bound * (1 + 1e-6) and np.abs(kernel).max() > 0.95 * bound
    assert np.std(kernel) == pytest.approx(bound / np.sqrt(3), rel=0.02)
    bias = vnet.block_5.convs[0].bias.numpy()
    assert np.abs(bias).max() <= bound * (1 + 1e-6) and np.abs(bias).max() > 0.5 * bound
