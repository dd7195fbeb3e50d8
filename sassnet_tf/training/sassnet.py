"""The SASSNet trainer: a keras.Model whose train_step updates the V-Net, then the discriminator."""

from __future__ import annotations

import keras
import tensorflow as tf

from sassnet_tf import losses
from sassnet_tf.schedules import consistency_weight

MODES = ("supervised", "sdm", "sassnet")


@keras.saving.register_keras_serializable(package="sassnet_tf")
class SASSNet(keras.Model):
    """Wraps the dual-head V-Net and the discriminator; only the networks are saved or exported, not this wrapper.

    One `train_step` on a batch ``{"labeled_image", "label", "sdm", "unlabeled_image"}`` is one reference
    iteration:
    1. network step: Dice on the labeled sigmoid output (or the `seg_loss` option), + `sdm_weight` x MSE of the
       tanh head against the target SDM (modes `sdm`, `sassnet`), + w(t) x cross-entropy of D(sdm, image) of the
       unlabeled patches against the "labeled" class (mode `sassnet`); one SGD step on the V-Net only. D runs in
       inference mode here (no dropout), as the reference puts it in eval mode for this term.
    2. discriminator step (mode `sassnet`): the V-Net's SDMs of all patches, recomputed in inference mode without
       gradients (or reused from step 1 with `d_reuse_forward`), classified by D (labeled = 1, unlabeled = 0);
       one Adam step on D only.

    Args:
        vnet: model returning ``{"seg", "sdm"}``.
        discriminator: model mapping ``(sdm, image)`` to 2 logits, or None in the supervised modes.
        mode: `supervised` (Dice), `sdm` (Dice + SDM), `sassnet` (the full method).
        sdm_weight: weight of the SDM loss (0.3).
        consistency: maximum of the adversarial weight w(t).
        rampup_interval, rampup_length: w(t) = consistency * exp(-5 (1 - min(t // interval, length) / length)^2).
        d_reuse_forward: reuse the network step's training-mode SDMs for the D step (saves a forward pass; an
            option, not the reference).
        seg_loss: the segmentation term, `losses.segmentation_loss`'s kind: `dice` (the reference), or `ce` /
            `ce_dice` (the authors' supervised-only V-Net scripts; an option). Logged as `seg_loss` when not Dice;
            `dice_loss` is logged either way.
    """

    def __init__(self, vnet, discriminator=None, mode="sassnet", sdm_weight=0.3, consistency=0.01,
                 rampup_interval=150, rampup_length=40, d_reuse_forward=False, seg_loss="dice", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if seg_loss not in losses.SEGMENTATION_LOSSES:
            raise ValueError(f"seg_loss {seg_loss!r} is not one of {', '.join(losses.SEGMENTATION_LOSSES)}")
        if mode == "sassnet" and discriminator is None:
            raise ValueError("mode 'sassnet' needs a discriminator")
        self.vnet = vnet
        self.discriminator = discriminator
        self.mode = mode
        self.sdm_weight = float(sdm_weight)
        self.consistency = float(consistency)
        self.rampup_interval = int(rampup_interval)
        self.rampup_length = int(rampup_length)
        self.d_reuse_forward = bool(d_reuse_forward)
        self.seg_loss = seg_loss
        names = ["loss", "dice_loss", "lr"]
        if seg_loss != "dice":
            names.append("seg_loss")
        if mode != "supervised":
            names.append("sdm_loss")
        if mode == "sassnet":
            names += ["adv_loss", "consistency_weight", "d_loss", "d_accuracy"]
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self._val_dice = keras.metrics.Mean(name="dice")

    # -- Keras plumbing -------------------------------------------------------------------------------------
    def compile(self, network_optimizer, discriminator_optimizer=None, **kwargs):
        """`network_optimizer` becomes `self.optimizer` (Keras wraps it for loss scaling under mixed_float16);
        the discriminator's is wrapped here, since Keras only wraps `self.optimizer`."""
        super().compile(optimizer=network_optimizer, **kwargs)
        if self.mode == "sassnet":
            if discriminator_optimizer is None:
                raise ValueError("mode 'sassnet' needs a discriminator_optimizer")
            if keras.mixed_precision.dtype_policy().name == "mixed_float16" and not isinstance(
                discriminator_optimizer, keras.optimizers.LossScaleOptimizer
            ):
                discriminator_optimizer = keras.optimizers.LossScaleOptimizer(discriminator_optimizer)
        self.d_optimizer = discriminator_optimizer

    def build_optimizers(self):
        """Create optimizer slots now (inside the strategy scope): lazily built slots fail under MirroredStrategy."""
        self.optimizer.build(self.vnet.trainable_variables)
        if self.mode == "sassnet":
            self.d_optimizer.build(self.discriminator.trainable_variables)

    @property
    def metrics(self):
        return list(self._trackers.values()) + [self._val_dice]

    def call(self, inputs, training=False):
        return self.vnet(inputs, training=training)

    def get_config(self):
        return {
            "vnet": keras.saving.serialize_keras_object(self.vnet),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "mode": self.mode, "sdm_weight": self.sdm_weight, "consistency": self.consistency,
            "rampup_interval": self.rampup_interval, "rampup_length": self.rampup_length,
            "d_reuse_forward": self.d_reuse_forward, "seg_loss": self.seg_loss, "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["vnet"] = keras.saving.deserialize_keras_object(config["vnet"])
        config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return cls(**config)

    # -- the iteration --------------------------------------------------------------------------------------
    def current_learning_rate(self):
        # Keras evaluates a schedule at the optimizer's iteration count, i.e. the rate this step will use.
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        return tf.cast(inner.learning_rate, tf.float32)

    def train_step(self, data):
        # Losses built from reduce_sum (Dice) are not divided by the replica count by Keras; gradients are summed
        # across replicas, so divide every per-replica loss here to get the mean over replicas.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        labeled = data["labeled_image"]
        n_labeled = tf.shape(labeled)[0]
        use_unlabeled = self.mode == "sassnet"
        images = tf.concat([labeled, data["unlabeled_image"]], axis=0) if use_unlabeled else labeled
        step = self.optimizer.iterations
        w = tf.constant(0.0)
        if use_unlabeled:
            w = tf.cast(consistency_weight(step, self.consistency, self.rampup_interval, self.rampup_length),
                        tf.float32)
        lr = self.current_learning_rate()

        with tf.GradientTape() as tape:
            out = self.vnet(images, training=True)
            seg_logits = tf.cast(out["seg"], tf.float32)
            sdm = tf.cast(out["sdm"], tf.float32)
            dice = losses.dice_loss(tf.sigmoid(seg_logits[:n_labeled]), data["label"])
            seg = dice
            if self.seg_loss != "dice":
                seg = losses.segmentation_loss(seg_logits[:n_labeled], data["label"], self.seg_loss)
            loss = seg
            if self.mode != "supervised":
                sdm_loss = losses.sdm_mse(sdm[:n_labeled], data["sdm"])
                loss = loss + self.sdm_weight * sdm_loss
            if use_unlabeled:
                d_logits = self.discriminator((sdm[n_labeled:], images[n_labeled:]), training=False)
                adv = losses.adversarial_cross_entropy(d_logits, 1)
                loss = loss + w * adv
            scaled = self.optimizer.scale_loss(loss / replicas)
        net_vars = self.vnet.trainable_variables
        grads = tape.gradient(scaled, net_vars)
        # The SDM head gets no gradient in the supervised mode; leave it out rather than warn every step.
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, net_vars) if g is not None])

        self._trackers["loss"].update_state(loss)
        self._trackers["dice_loss"].update_state(dice)
        if self.seg_loss != "dice":
            self._trackers["seg_loss"].update_state(seg)
        self._trackers["lr"].update_state(lr)
        if self.mode != "supervised":
            self._trackers["sdm_loss"].update_state(sdm_loss)
        if use_unlabeled:
            self._trackers["adv_loss"].update_state(adv)
            self._trackers["consistency_weight"].update_state(w)
            self._discriminator_step(images, sdm, n_labeled, replicas)
        return {name: t.result() for name, t in self._trackers.items()}

    def _discriminator_step(self, images, sdm_train, n_labeled, replicas):
        if self.d_reuse_forward:
            sdm_d = tf.stop_gradient(sdm_train)
        else:
            sdm_d = tf.stop_gradient(tf.cast(self.vnet(images, training=False)["sdm"], tf.float32))
        n_total = tf.shape(images)[0]
        target = tf.cast(tf.range(n_total) < n_labeled, tf.int32)  # labeled = 1, unlabeled = 0
        with tf.GradientTape() as tape:
            logits = self.discriminator((sdm_d, images), training=True)
            d_loss = losses.adversarial_cross_entropy(logits, target)
            scaled = self.d_optimizer.scale_loss(d_loss / replicas)
        d_vars = self.discriminator.trainable_variables
        grads = tape.gradient(scaled, d_vars)
        self.d_optimizer.apply_gradients(zip(grads, d_vars))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), target), tf.float32))
        self._trackers["d_loss"].update_state(d_loss)
        self._trackers["d_accuracy"].update_state(accuracy)

    def test_step(self, data):
        """Dice (the metric, thresholded at 0.5) of the V-Net on validation patches."""
        self._val_dice.update_state(patch_dice(self.vnet, data["labeled_image"], data["label"]))
        return {"dice": self._val_dice.result()}


def patch_dice(vnet, image, label):
    """Per-patch Dice of the thresholded sigmoid output; 1 where prediction and label are both empty."""
    out = vnet(image, training=False)
    pred = tf.cast(tf.sigmoid(tf.cast(out["seg"], tf.float32)) > 0.5, tf.float32)
    gt = tf.cast(label, tf.float32)
    axes = tf.range(1, tf.rank(gt))
    inter = tf.reduce_sum(pred * gt, axis=axes)
    total = tf.reduce_sum(pred, axis=axes) + tf.reduce_sum(gt, axis=axes)
    return tf.where(total > 0, 2.0 * inter / tf.maximum(total, 1.0), 1.0)
