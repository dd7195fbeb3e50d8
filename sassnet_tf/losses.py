"""SASSNet's losses as pure functions on tensors. The math runs in float32 whatever the input dtype (bf16/fp16
sums over a 112x112x80 patch lose most of their digits)."""

from __future__ import annotations

import tensorflow as tf

SEGMENTATION_LOSSES = ("dice", "ce", "ce_dice")  # the `kind`s of `segmentation_loss`


def _float32(x, name: str) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(x), tf.float32, name=name)


def _check_same_shape(a: tf.Tensor, b: tf.Tensor, fn: str, names: tuple) -> None:
    # Broadcasting [B,H,W,D,1] against [B,H,W,D] would silently give a wrong loss: insist on equal static shapes.
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(f"{fn}: {names[0]} has shape {a.shape} and {names[1]} has shape {b.shape}; "
                         "expected the same shape")


def dice_loss(prob, target, smooth: float = 1e-5) -> tf.Tensor:
    """Soft Dice loss pooled over the whole batch, as the reference:
    ``1 - (2 * sum(p * g) + smooth) / (sum(p^2) + sum(g^2) + smooth)``.

    Args:
        prob: probabilities (sigmoid of the segmentation logits), any shape, e.g. ``[B, H, W, D, 1]``.
        target: ground truth 0/1 of the same shape.
        smooth: added to numerator and denominator (1e-5 in the reference).

    Returns:
        float32 scalar.
    """
    p, g = _float32(prob, "prob"), _float32(target, "target")
    _check_same_shape(p, g, "dice_loss", ("prob", "target"))
    intersection = tf.reduce_sum(p * g)
    denominator = tf.reduce_sum(p * p) + tf.reduce_sum(g * g)
    return 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)


def binary_cross_entropy(logits, target) -> tf.Tensor:
    """Mean binary cross-entropy of segmentation logits against a 0/1 ground truth.

    The authors' supervised-only V-Net scripts use a 2-class softmax cross-entropy; with one sigmoid logit ``z``
    this is the same loss for ``z = z1 - z0`` (softmax of two logits is the sigmoid of their difference).

    Args:
        logits: segmentation logits (before the sigmoid), e.g. ``[B, H, W, D, 1]``.
        target: ground truth 0/1 of the same shape.

    Returns:
        float32 scalar, the mean over every voxel of the batch.
    """
    z, g = _float32(logits, "logits"), _float32(target, "target")
    _check_same_shape(z, g, "binary_cross_entropy", ("logits", "target"))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=g, logits=z))


def segmentation_loss(logits, target, kind: str = "dice") -> tf.Tensor:
    """The segmentation term of the network's loss, by `kind`.

    - ``dice``: `dice_loss` on the sigmoid (SASSNet's reference, every mode).
    - ``ce``: `binary_cross_entropy` (the SASSNet repository's supervised-only V-Net script).
    - ``ce_dice``: ``0.5 * (ce + dice)`` (UA-MT's supervised-only V-Net script, the source of the paper's
      16-label V-Net row).

    Args:
        logits: segmentation logits, e.g. ``[B, H, W, D, 1]``.
        target: ground truth 0/1 of the same shape.
        kind: one of `SEGMENTATION_LOSSES`.

    Returns:
        float32 scalar.
    """
    if kind not in SEGMENTATION_LOSSES:
        raise ValueError(f"segmentation_loss: kind {kind!r} is not one of {', '.join(SEGMENTATION_LOSSES)}")
    if kind == "ce":
        return binary_cross_entropy(logits, target)
    dice = dice_loss(tf.sigmoid(_float32(logits, "logits")), target)
    if kind == "dice":
        return dice
    return 0.5 * (binary_cross_entropy(logits, target) + dice)


def sdm_mse(pred, target) -> tf.Tensor:
    """Mean squared error between the tanh head and the ground-truth signed distance map.

    Args:
        pred: predicted SDM, e.g. ``[B, H, W, D, 1]``.
        target: ground-truth SDM of the same shape.

    Returns:
        float32 scalar.
    """
    p, t = _float32(pred, "pred"), _float32(target, "target")
    _check_same_shape(p, t, "sdm_mse", ("pred", "target"))
    return tf.reduce_mean(tf.square(p - t))


def adversarial_cross_entropy(logits, labels) -> tf.Tensor:
    """Mean softmax cross-entropy of discriminator logits against integer classes (1 = labeled, 0 = unlabeled).

    Args:
        logits: ``[B, 2]`` discriminator outputs.
        labels: ``[B]`` integer classes, or one scalar class used for the whole batch (the generator's term uses
            the constant "labeled" class).

    Returns:
        float32 scalar.
    """
    logits = _float32(logits, "logits")
    if logits.shape.rank is not None and logits.shape.rank != 2:
        raise ValueError(f"adversarial_cross_entropy: logits must be [batch, classes], got shape {logits.shape}")
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_floating:
        labels = tf.cast(tf.round(labels), tf.int32)
    labels = tf.cast(labels, tf.int32)
    if labels.shape.rank == 0:
        labels = tf.fill(tf.shape(logits)[:1], labels)
    elif labels.shape.rank != 1:
        raise ValueError(f"adversarial_cross_entropy: labels must be a scalar or [batch], got shape {labels.shape}")
    elif not labels.shape.is_compatible_with(logits.shape[:1]):
        raise ValueError(f"adversarial_cross_entropy: {labels.shape[0]} labels for {logits.shape[0]} logits")
    per_sample = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(per_sample)
