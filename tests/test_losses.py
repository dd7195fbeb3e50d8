"""Losses against their numpy formulas; float32 math for bf16 inputs; shape checks."""

import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf import losses


def rng_arrays(shape=(2, 8, 8, 4, 1), seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=shape).astype(np.float32), (rng.uniform(size=shape) > 0.7).astype(np.float32)


def test_dice_loss_pooled_over_the_batch():
    p, g = rng_arrays()
    expected = 1 - (2 * np.sum(p * g) + 1e-5) / (np.sum(p ** 2) + np.sum(g ** 2) + 1e-5)
    got = losses.dice_loss(tf.constant(p), tf.constant(g))
    assert got.dtype == tf.float32 and got.shape == ()
    assert float(got) == pytest.approx(expected, rel=1e-6)
    per_sample_mean = np.mean([1 - (2 * np.sum(p[i] * g[i]) + 1e-5) / (np.sum(p[i] ** 2) + np.sum(g[i] ** 2) + 1e-5)
                               for i in range(2)])
    assert abs(float(got) - per_sample_mean) > 1e-6  # pooled, not averaged per sample


def test_dice_loss_edge_values():
    g = np.zeros((1, 4, 4, 4, 1), np.float32)
    g[0, :2] = 1
    assert float(losses.dice_loss(g, g)) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.dice_loss(1 - g, g)) == pytest.approx(1.0, abs=1e-6)
    empty = np.zeros_like(g)
    assert float(losses.dice_loss(empty, empty)) == pytest.approx(0.0)  # smooth / smooth
    assert float(losses.dice_loss(g, g, smooth=1.0)) == pytest.approx(0.0, abs=1e-7)


def test_float32_math_for_bfloat16_inputs():
    p, g = rng_arrays(shape=(2, 32, 32, 16, 1), seed=1)
    pb, gb = tf.cast(p, tf.bfloat16), tf.cast(g, tf.bfloat16)
    p32, g32 = tf.cast(pb, tf.float32).numpy(), tf.cast(gb, tf.float32).numpy()
    expected = 1 - (2 * np.sum(p32 * g32, dtype=np.float64) + 1e-5) / (
        np.sum(p32.astype(np.float64) ** 2) + np.sum(g32.astype(np.float64) ** 2) + 1e-5)
    got = losses.dice_loss(pb, gb)
    assert got.dtype == tf.float32
    assert float(got) == pytest.approx(expected, rel=1e-5)
    mse = losses.sdm_mse(pb, tf.zeros_like(pb))
    assert mse.dtype == tf.float32 and float(mse) == pytest.approx(np.mean(p32.astype(np.float64) ** 2), rel=1e-5)


def test_sdm_mse():
    rng = np.random.default_rng(2)
    a = rng.uniform(-1, 1, (2, 8, 8, 4, 1)).astype(np.float32)
    b = rng.uniform(-1, 1, (2, 8, 8, 4, 1)).astype(np.float32)
    assert float(losses.sdm_mse(a, b)) == pytest.approx(np.mean((a - b) ** 2), rel=1e-6)


@pytest.mark.parametrize("fn", [losses.dice_loss, losses.sdm_mse, losses.binary_cross_entropy])
def test_shape_mismatch_is_an_error(fn):
    with pytest.raises(ValueError, match=r"expected the same shape"):
        fn(np.zeros((2, 8, 8, 4, 1), np.float32), np.zeros((2, 8, 8, 4), np.float32))


def softmax_ce(logits, labels):
    logits = logits.astype(np.float64)
    log_z = np.log(np.exp(logits).sum(axis=1))
    return np.mean(log_z - logits[np.arange(len(labels)), labels])


def test_adversarial_cross_entropy_with_labels():
    logits = np.random.default_rng(3).normal(size=(4, 2)).astype(np.float32)
    labels = np.array([1, 1, 0, 0])
    got = losses.adversarial_cross_entropy(logits, labels)
    assert got.dtype == tf.float32
    assert float(got) == pytest.approx(softmax_ce(logits, labels), rel=1e-6)


def test_adversarial_cross_entropy_scalar_class_broadcasts():
    logits = np.random.default_rng(4).normal(size=(3, 2)).astype(np.float32)
    assert float(losses.adversarial_cross_entropy(logits, 1)) == pytest.approx(softmax_ce(logits, [1, 1, 1]), rel=1e-6)
    assert float(losses.adversarial_cross_entropy(tf.cast(logits, tf.bfloat16), tf.constant(0))) == pytest.approx(
        softmax_ce(tf.cast(tf.cast(logits, tf.bfloat16), tf.float32).numpy(), [0, 0, 0]), rel=1e-5)


def test_adversarial_cross_entropy_in_a_graph_with_unknown_batch():
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def loss(logits):
        return losses.adversarial_cross_entropy(logits, 1)

    logits = np.array([[0.0, 2.0], [1.0, -1.0]], np.float32)
    assert float(loss(logits)) == pytest.approx(softmax_ce(logits, [1, 1]), rel=1e-6)


@pytest.mark.parametrize("logits,labels,match", [
    (np.zeros((4, 2, 1)), 1, r"logits must be \[batch, classes\]"),
    (np.zeros((4, 2)), np.zeros((4, 1), np.int32), "labels must be a scalar or"),
    (np.zeros((4, 2)), np.zeros(3, np.int32), "3 labels for 4 logits"),
])
def test_adversarial_cross_entropy_bad_shapes(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        losses.adversarial_cross_entropy(logits.astype(np.float32), labels)


def test_binary_cross_entropy_is_the_two_class_softmax_cross_entropy():
    """The authors' supervised-only scripts: softmax CE over logits (z0, z1); one sigmoid logit z = z1 - z0."""
    rng = np.random.default_rng(3)
    z0, z1 = rng.normal(scale=3, size=(2, 2, 8, 8, 4, 1))
    _, g = rng_arrays()
    labels = g.reshape(-1).astype(np.int64)
    two_class = softmax_ce(np.stack([z0.reshape(-1), z1.reshape(-1)], axis=1), labels)
    got = losses.binary_cross_entropy(tf.constant(z1 - z0, tf.float32), tf.constant(g))
    assert got.dtype == tf.float32 and got.shape == ()
    assert float(got) == pytest.approx(two_class, rel=1e-5)
    # float32 math for bf16 logits, as the other losses
    assert losses.binary_cross_entropy(tf.constant(z1 - z0, tf.bfloat16), g).dtype == tf.float32


def test_segmentation_loss_kinds():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(2, 8, 8, 4, 1)).astype(np.float32)
    _, g = rng_arrays()
    dice = float(losses.dice_loss(1 / (1 + np.exp(-z)), g))
    ce = float(losses.binary_cross_entropy(z, g))
    assert float(losses.segmentation_loss(z, g)) == pytest.approx(dice, rel=1e-6)  # the reference's default
    assert float(losses.segmentation_loss(z, g, "ce")) == pytest.approx(ce, rel=1e-6)
    assert float(losses.segmentation_loss(z, g, "ce_dice")) == pytest.approx(0.5 * (ce + dice), rel=1e-6)
    with pytest.raises(ValueError, match=r"kind 'bce' is not one of dice, ce, ce_dice"):
        losses.segmentation_loss(z, g, "bce")
