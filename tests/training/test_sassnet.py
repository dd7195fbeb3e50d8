"""The SASSNet train_step: which network each half updates, the losses it reports, the modes and precisions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf import losses
from sassnet_tf.models import build_discriminator, build_vnet
from sassnet_tf.schedules import StepDecay
from sassnet_tf.training.precision import apply_precision
from sassnet_tf.training.sassnet import SASSNet
from sassnet_tf.training.torch_sgd import TorchSGD

PATCH = (32, 32, 16)


def make_batch(labeled_bs=2, unlabeled_bs=2, seed=0):
    rng = np.random.default_rng(seed)
    shape = PATCH + (1,)
    label = (rng.random((labeled_bs,) + shape) > 0.7).astype(np.float32)
    return {
        "labeled_image": tf.constant(rng.normal(size=(labeled_bs,) + shape), tf.float32),
        "label": tf.constant(label),
        "sdm": tf.constant(rng.uniform(-1, 1, size=(labeled_bs,) + shape), tf.float32),
        "unlabeled_image": tf.constant(rng.normal(size=(unlabeled_bs,) + shape), tf.float32),
    }


def make_model(mode="sassnet", lr=0.01, d_lr=1e-3, seg_loss="dice"):
    keras.utils.set_random_seed(1)
    vnet = build_vnet(n_filters=2)
    disc = build_discriminator(ndf=4) if mode == "sassnet" else None
    model = SASSNet(vnet, disc, mode=mode, consistency=0.5, rampup_interval=1, rampup_length=1, seg_loss=seg_loss)
    model.compile(TorchSGD(StepDecay(lr, (100,), 0.1), momentum=0.9, coupled_weight_decay=1e-4),
                  keras.optimizers.Adam(d_lr) if mode == "sassnet" else None)
    model.build_optimizers()
    return model


def snapshot(net):
    return [v.numpy().copy() for v in net.variables]


def changed(before, net):
    return any(not np.array_equal(a, v.numpy()) for a, v in zip(before, net.variables))


def test_one_step_updates_both_networks_and_reports_every_loss():
    model = make_model()
    v0, d0 = snapshot(model.vnet), snapshot(model.discriminator)
    logs = model.train_step(make_batch())
    assert changed(v0, model.vnet) and changed(d0, model.discriminator)
    assert set(logs) == {"loss", "dice_loss", "sdm_loss", "adv_loss", "consistency_weight", "lr", "d_loss",
                         "d_accuracy"}
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert float(logs["lr"]) == pytest.approx(0.01)
    # rampup_interval=1, length=1: w(0) = 0.5 * exp(-5)
    assert float(logs["consistency_weight"]) == pytest.approx(0.5 * np.exp(-5.0), rel=1e-5)
    assert int(model.optimizer.iterations) == 1 and int(model.d_optimizer.iterations) == 1


def test_grappler_optimises_the_train_step_without_failing(capfd):
    """A failed Grappler remapper pass (logged, not raised) drops every fusion of the step: conv + bias + ReLU."""
    model = make_model()
    batch = make_batch()
    capfd.readouterr()
    tf.function(model.train_step)(batch)
    assert "remapper failed" not in capfd.readouterr().err


def test_network_step_leaves_discriminator_and_vice_versa(monkeypatch):
    model = make_model()
    batch = make_batch()
    calls = []
    real_d_step = model._discriminator_step
    monkeypatch.setattr(model, "_discriminator_step", lambda *a: calls.append(a))
    d0 = snapshot(model.discriminator)
    v0 = snapshot(model.vnet)
    model.train_step(batch)  # network half only
    assert calls and changed(v0, model.vnet)
    assert not changed(d0, model.discriminator), "the network step must not touch the discriminator"
    images = tf.concat([batch["labeled_image"], batch["unlabeled_image"]], 0)
    sdm = tf.cast(model.vnet(images, training=False)["sdm"], tf.float32)
    v1 = snapshot(model.vnet)  # includes BatchNorm moving statistics
    real_d_step(images, sdm, tf.constant(2), 1)
    assert changed(d0, model.discriminator)
    assert not changed(v1, model.vnet), "the discriminator step must not touch the V-Net (weights or BN stats)"


def test_adversarial_gradient_reaches_the_network_only_through_unlabeled_patches(monkeypatch):
    model = make_model()
    batch = make_batch()
    # 1. In the network step the discriminator sees exactly the unlabeled half of the batch (its training=False
    #    call; the D step's training=True call sees all four patches).
    seen = []
    real_call = model.discriminator.call
    monkeypatch.setattr(model.discriminator, "call", lambda inputs, training=None: (
        seen.append((inputs, training)), real_call(inputs, training=training))[1])
    model.train_step(batch)
    (sdm, image), training = seen[0]
    assert not training and sdm.shape[0] == 2
    np.testing.assert_array_equal(image.numpy(), batch["unlabeled_image"].numpy())
    assert seen[1][1] and seen[1][0][1].shape[0] == 4
    # 2. Its gradient flows back into the network through the unlabeled patches only: none reaches the labeled
    #    inputs (inference mode: no batch statistics tie the patches together), some reaches every unlabeled one.
    images = tf.concat([batch["labeled_image"], batch["unlabeled_image"]], 0)
    with tf.GradientTape() as tape:
        tape.watch(images)
        sdm = model.vnet(images, training=False)["sdm"]
        loss = tf.reduce_mean(model.discriminator((sdm[2:], images[2:]), training=False))
    per_patch = tf.reduce_sum(tf.abs(tape.gradient(loss, images)), axis=[1, 2, 3, 4]).numpy()
    assert per_patch[0] == 0.0 and per_patch[1] == 0.0
    assert per_patch[2] > 0.0 and per_patch[3] > 0.0


@pytest.mark.parametrize("mode, keys", [("supervised", {"loss", "dice_loss", "lr"}),
                                        ("sdm", {"loss", "dice_loss", "sdm_loss", "lr"})])
def test_ablation_modes(mode, keys):
    model = make_model(mode)
    batch = make_batch(unlabeled_bs=0)
    v0 = snapshot(model.vnet)
    logs = model.train_step(batch)
    assert set(logs) == keys and changed(v0, model.vnet)
    if mode == "supervised":
        assert float(logs["loss"]) == pytest.approx(float(logs["dice_loss"]))


@pytest.mark.parametrize("seg_loss", ["ce", "ce_dice"])
def test_the_segmentation_loss_option_replaces_dice_in_the_total(seg_loss):
    """`seg_loss` ce / ce_dice (the authors' supervised-only V-Net scripts): the step minimises that term, recomputed
    here from the network's output on the same batch, and still logs the Dice loss beside it."""
    model = make_model("supervised", seg_loss=seg_loss)
    model.vnet = build_vnet(n_filters=2, dropout=0.0)  # no dropout: the step's forward pass can be repeated
    model.compile(TorchSGD(0.01))
    model.build_optimizers()
    batch = make_batch(unlabeled_bs=0)
    out = model.vnet(batch["labeled_image"], training=True)
    expected = float(losses.segmentation_loss(out["seg"], batch["label"], seg_loss))
    dice = float(losses.dice_loss(tf.sigmoid(out["seg"]), batch["label"]))
    v0 = snapshot(model.vnet)
    logs = model.train_step(batch)
    assert set(logs) == {"loss", "seg_loss", "dice_loss", "lr"} and changed(v0, model.vnet)
    assert float(logs["loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(logs["seg_loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(logs["dice_loss"]) == pytest.approx(dice, rel=1e-5)
    assert abs(expected - dice) > 1e-3
    restored = SASSNet.from_config(model.get_config())
    assert restored.seg_loss == seg_loss
    with pytest.raises(ValueError, match=r"seg_loss 'focal' is not one of dice, ce, ce_dice"):
        make_model("supervised", seg_loss="focal")


def test_loss_is_the_reference_combination():
    """Each reported term and the total, recomputed in numpy from the networks' outputs on the same batch."""
    model = make_model()
    keras.utils.set_random_seed(2)
    model.vnet = build_vnet(n_filters=2, dropout=0.0)  # no dropout: the step's forward pass can be repeated
    model.discriminator = build_discriminator(ndf=4, dropout=0.0)
    model.compile(TorchSGD(0.01), keras.optimizers.Adam(1e-3))
    model.build_optimizers()
    batch = make_batch()
    images = tf.concat([batch["labeled_image"], batch["unlabeled_image"]], 0)
    out = model.vnet(images, training=True)  # batch statistics, as in the step
    logits = model.discriminator((out["sdm"][2:], images[2:]), training=False).numpy().astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-out["seg"].numpy()[:2].astype(np.float64)))
    g = batch["label"].numpy()
    dice = 1.0 - (2.0 * (p * g).sum() + 1e-5) / ((p * p).sum() + (g * g).sum() + 1e-5)
    mse = ((out["sdm"].numpy()[:2] - batch["sdm"].numpy()) ** 2).mean()
    adv = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 1])  # cross-entropy against class 1 ("labeled")
    w = 0.5 * np.exp(-5.0 * (1.0 - min(0 // 1, 1) / 1) ** 2)  # consistency 0.5, interval 1, length 1, step 0

    logs = model.train_step(batch)
    assert float(logs["dice_loss"]) == pytest.approx(dice, rel=1e-4)
    assert float(logs["sdm_loss"]) == pytest.approx(mse, rel=1e-4)
    assert float(logs["adv_loss"]) == pytest.approx(adv, rel=1e-4)
    assert float(logs["consistency_weight"]) == pytest.approx(w, rel=1e-6)
    assert float(logs["loss"]) == pytest.approx(dice + 0.3 * mse + w * adv, rel=1e-4)


def test_discriminator_step_reports_its_loss_and_accuracy():
    """d_loss and d_accuracy of the D step equal those recomputed in numpy from D's logits on the same inputs."""
    model = make_model()
    keras.utils.set_random_seed(3)
    model.discriminator = build_discriminator(ndf=4, dropout=0.0)  # deterministic in training mode (no BN)
    model.compile(TorchSGD(0.01), keras.optimizers.Adam(1e-3))
    model.build_optimizers()
    batch = make_batch()
    images = tf.concat([batch["labeled_image"], batch["unlabeled_image"]], 0)
    sdm = tf.cast(model.vnet(images, training=False)["sdm"], tf.float32)
    logits = model.discriminator((sdm, images), training=True).numpy().astype(np.float64)  # before D's update
    target = np.array([1, 0, 0, 0])  # n_labeled = 1: a constant prediction scores 0.25 or 0.75, not 0.5
    model._discriminator_step(images, sdm, tf.constant(1), 1)
    expected_loss = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(4), target])
    expected_accuracy = np.mean(np.argmax(logits, 1) == target)
    assert float(model._trackers["d_loss"].result()) == pytest.approx(expected_loss, rel=1e-5)
    assert float(model._trackers["d_accuracy"].result()) == expected_accuracy


def test_test_step_dice():
    """The validation Dice: per patch, of the sigmoid output thresholded at 0.5, averaged; 1 for two empty masks."""
    model = make_model()
    batch = make_batch()
    image, label = batch["labeled_image"], batch["label"].numpy()
    seg = model.vnet(image, training=False)["seg"].numpy()
    pred = seg > 0.0  # sigmoid > 0.5
    dice = [2.0 * (p & (g > 0)).sum() / (p.sum() + (g > 0).sum()) for p, g in zip(pred, label)]
    logs = model.test_step({"labeled_image": image, "label": batch["label"]})
    assert float(logs["dice"]) == pytest.approx(np.mean(dice), rel=1e-6)


def test_keras_evaluate_runs_test_step():
    """`model.evaluate` (and so `fit(validation_data=...)`) reaches test_step: the same patch Dice as the trainer's
    own validation (mean of patch_dice over the patches)."""
    from sassnet_tf.training.sassnet import patch_dice

    model = make_model()
    model.compile(TorchSGD(0.01), keras.optimizers.Adam(1e-3))
    batches = [make_batch(), make_batch()]
    data = tf.data.Dataset.from_tensor_slices({
        "labeled_image": tf.concat([b["labeled_image"] for b in batches], 0),
        "label": tf.concat([b["label"] for b in batches], 0)}).batch(1)
    logs = model.evaluate(data, return_dict=True, verbose=0)
    expected = np.mean([patch_dice(model.vnet, b["labeled_image"], b["label"]).numpy() for b in data])
    assert logs["dice"] == pytest.approx(expected, rel=1e-5)


def test_patch_dice_of_empty_masks():
    """Prediction and label both empty: 1 (a perfect answer), not 0/0; an empty prediction of a real mask: 0."""
    from sassnet_tf.training.sassnet import patch_dice

    def background_everywhere(x, training=False):
        return {"seg": -10.0 * tf.ones_like(x)}

    image = tf.zeros((2,) + PATCH + (1,))
    label = np.zeros((2,) + PATCH + (1,), np.float32)
    label[1, 4:8, 4:8, 4:8] = 1.0
    np.testing.assert_array_equal(patch_dice(background_everywhere, image, tf.constant(label)).numpy(), [1.0, 0.0])


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_each_precision_runs_a_step(precision):
    apply_precision(precision)
    model = make_model()
    if precision == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.d_optimizer, keras.optimizers.LossScaleOptimizer)
    v0, d0 = snapshot(model.vnet), snapshot(model.discriminator)
    logs = tf.function(model.train_step)(make_batch())
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert changed(v0, model.vnet) and changed(d0, model.discriminator)
    assert all(v.dtype == "float32" for v in model.vnet.trainable_variables)


def test_mirrored_strategy_two_replicas_train():
    """Two logical CPUs: the global batch is split across the replicas and one synchronised update is applied."""
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < 2:
        pytest.skip("needs 2 logical CPUs (configured at the start of the process in tests/training/conftest.py)")
    strategy = tf.distribute.MirroredStrategy([c.name for c in cpus[:2]])
    with strategy.scope():
        model = make_model(mode="sdm")
    batch = make_batch(unlabeled_bs=0)
    del batch["unlabeled_image"]
    dist = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).unbatch().batch(2))

    @tf.function
    def step(b):
        return strategy.run(model.train_step, args=(b,))

    v0 = snapshot(model.vnet)
    for b in dist:
        step(b)
    assert changed(v0, model.vnet)
    assert int(model.optimizer.iterations.numpy()) == 1
    # both replicas hold the same weights after the all-reduced update
    per_replica = strategy.run(lambda: [tf.identity(v) for v in model.vnet.trainable_variables])
    for v in per_replica:
        values = strategy.experimental_local_results(v)
        assert len(values) == 2
        np.testing.assert_array_equal(values[0].numpy(), values[1].numpy())
