"""Folding conv + BatchNorm + ReLU at inference: same outputs as the unfolded blocks, never in training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf.models import conv_block, down_block, up_block
from sassnet_tf.models.conv_block import ConvBlock
from sassnet_tf.models.down_block import DownBlock
from sassnet_tf.models.folded_conv import can_fold
from sassnet_tf.models.up_block import UpBlock


def _randomise_bn(layer, seed=0):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        name = w.path.split("/")[-1]
        if name == "moving_variance":
            w.assign(rng.uniform(0.5, 2.0, w.shape))
        elif name in ("moving_mean", "beta"):
            w.assign(rng.normal(0.0, 0.5, w.shape))
        elif name == "gamma":
            w.assign(rng.uniform(0.5, 1.5, w.shape))


def _unfolded(monkeypatch, block, x, training):
    for module in (conv_block, down_block, up_block):
        monkeypatch.setattr(module, "can_fold", lambda norm, training: False)
    out = block(x, training=training).numpy()
    monkeypatch.undo()
    return out


@pytest.mark.parametrize("make", [lambda: ConvBlock(6, n_convs=2), lambda: DownBlock(6), lambda: UpBlock(6)])
def test_folded_inference_equals_conv_bn_relu(monkeypatch, make):
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 8, 6, 4, 3)).astype(np.float32))
    block = make()
    block(x)
    _randomise_bn(block)
    folded = block(x, training=False).numpy()
    np.testing.assert_allclose(folded, _unfolded(monkeypatch, block, x, False), atol=2e-5, rtol=1e-5)
    assert folded.min() == 0.0 and folded.max() > 0.0


def test_training_uses_batch_statistics_not_the_fold(monkeypatch):
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 8, 6, 4, 3)).astype(np.float32))
    block = ConvBlock(4)
    block(x)
    _randomise_bn(block)
    trained = block(x, training=True).numpy()
    assert not np.allclose(trained, block(x, training=False).numpy(), atol=1e-3)
    np.testing.assert_allclose(trained, _unfolded(monkeypatch, block, x, True), atol=1e-5)


def test_can_fold_rules():
    bn = keras.layers.BatchNormalization()
    assert can_fold(bn, None) and can_fold(bn, False) and not can_fold(bn, True)
    bn.trainable = False
    assert can_fold(bn, True)  # a frozen BN uses its moving statistics even in training
    assert not can_fold(keras.layers.GroupNormalization(groups=2), False) and not can_fold(None, False)


def test_mixed_bfloat16_fold_stays_close(policy, monkeypatch):
    policy("mixed_bfloat16")
    x = tf.constant(np.random.default_rng(3).normal(size=(1, 8, 6, 4, 3)).astype(np.float32))
    block = DownBlock(4)
    block(x)
    _randomise_bn(block)
    folded = block(x, training=False)
    assert folded.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(folded, tf.float32).numpy(),
                               _unfolded(monkeypatch, block, x, False).astype(np.float32), atol=0.05, rtol=0.05)
