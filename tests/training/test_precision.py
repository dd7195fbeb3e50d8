"""Precision: what auto picks on each CPU kind, and each mixed precision trained against float32."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sassnet_tf.training import precision


def test_cpu_flags(tmp_path):
    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile\n")
    without = tmp_path / "b"
    without.write_text("processor : 0\nflags : fpu sse avx2 fma\n")
    assert precision.cpu_has_fast_bf16(str(with_bf16))
    assert not precision.cpu_has_fast_bf16(str(without))
    assert not precision.cpu_has_fast_bf16(str(tmp_path / "missing"))
    intel = tmp_path / "c"  # AVX512-BF16 whose AMX is hidden: native bf16, but slower than float32
    intel.write_text("processor : 0\nvendor_id : GenuineIntel\nflags : fpu avx512f avx512_bf16 avx512_fp16\n")
    assert precision.cpu_has_native_bf16(str(intel)) and not precision.cpu_has_fast_bf16(str(intel))
    assert precision.cpu_has_native_bf16(str(with_bf16)) and not precision.cpu_has_native_bf16(str(without))


@pytest.mark.parametrize("vendor, flags, gpu, expected, reason", [
    ("AuthenticAMD", "avx2 fma", False, "float32", "without native bf16"),  # EPYC Zen 3
    ("GenuineIntel", "avx2 avx512f avx512bw", False, "float32", "without native bf16"),  # AVX-512 without BF16
    ("AuthenticAMD", "avx2 avx512f avx512_bf16 avx512_vnni", False, "mixed_bfloat16", "native bf16"),  # Zen 4/5
    ("GenuineIntel", "avx2 avx512f avx512_bf16 amx_bf16 amx_tile", False, "mixed_bfloat16", "AMX"),  # Sapphire Rapids
    ("GenuineIntel", "avx2 avx512f avx512_bf16 avx512_fp16", False, "float32", "Intel"),  # the same, AMX hidden
    ("GenuineIntel", "avx2 fma", True, "mixed_float16", "GPU"),
])
def test_auto_per_machine_kind(tmp_path, vendor, flags, gpu, expected, reason):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor : 0\nvendor_id : {vendor}\nmodel name : test CPU\nflags : fpu sse {flags}\n")
    picked, why = precision.auto_precision(has_gpu=gpu, cpuinfo_path=str(cpuinfo))
    assert picked == expected and reason in why


def test_auto_is_logged_with_its_reason(monkeypatch, caplog):
    monkeypatch.setattr(precision, "auto_precision", lambda: ("float32", "a stated reason"))
    with caplog.at_level("INFO", logger="sassnet_tf"):
        assert precision.apply_precision("auto") == "float32"
    assert "precision: float32 (auto: a stated reason)" in caplog.text


def test_apply_and_reject():
    assert precision.apply_precision("mixed_float16") == "mixed_float16"
    assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
    with pytest.raises(ValueError, match="not one of"):
        precision.resolve_precision("float8")


# -- numerics of each precision against float32 (issue 18) -------------------------------------------------------
# bf16 keeps 8 bits of mantissa: on these tiny networks the first step's loss agrees with float32 to ~1e-4 and the
# global gradient norms to <= 8 %, single kernels to within a factor 1.4 (measured on an AVX512-BF16 EPYC; a BN
# network's kernel gradients are small differences of large sums). A faulty kernel is off by orders of magnitude
# (oneDNN's bf16 filter gradient on a length-2 first axis gave norms of 1e36), so the bounds below have margin both
# ways. float16 runs on the CPU too (slowly), so it is checked everywhere.
NUMERICS_PATCHES = [(32, 32, 16), (16, 48, 32)]  # (32, 32, 16): a bottleneck of 2x2x1, the faulty case


def _blob_batch(patch, seed=0):
    """2 labeled + 2 unlabeled patches with a bright ellipsoid each: a learnable signal, not noise."""
    from sassnet_tf.data.sdm import compute_sdm

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in patch], indexing="ij"), -1)
    images, labels = [], []
    for _ in range(4):
        centre = np.array(patch) / 2 + rng.uniform(-3, 3, 3)
        radii = np.array(patch) * rng.uniform(0.2, 0.3)
        label = (((grid - centre) / radii) ** 2).sum(-1) <= 1
        images.append(label * 2.0 + rng.normal(0, 0.5, patch))
        labels.append(label)
    image = np.stack(images)[..., None].astype(np.float32)
    label = np.stack(labels)[..., None].astype(np.float32)
    sdm = np.stack([compute_sdm(x[..., 0]) for x in label[:2]])[..., None].astype(np.float32)
    return {"labeled_image": tf.constant(image[:2]), "label": tf.constant(label[:2]), "sdm": tf.constant(sdm),
            "unlabeled_image": tf.constant(image[2:])}


def _tiny_sassnet(policy, dropout=0.0, lr=1.0, weights_from=None):
    """A tiny SASSNet under `policy`; plain SGD (no momentum, no decay) so one step moves a weight by -lr * grad."""
    from sassnet_tf.models import build_discriminator, build_vnet
    from sassnet_tf.training.sassnet import SASSNet
    from sassnet_tf.training.torch_sgd import TorchSGD

    keras.mixed_precision.set_dtype_policy(policy)
    keras.utils.set_random_seed(1)
    vnet, disc = build_vnet(n_filters=2, dropout=dropout), build_discriminator(ndf=4, dropout=dropout)
    if weights_from is not None:
        for mine, theirs in zip(vnet.variables + disc.variables,
                                weights_from.vnet.variables + weights_from.discriminator.variables):
            mine.assign(theirs)
    model = SASSNet(vnet, disc, consistency=1.0, rampup_interval=1, rampup_length=1)
    model.compile(TorchSGD(lr, momentum=0.0), TorchSGD(lr, momentum=0.0))
    model.build_optimizers()
    return model


def _first_step(model, batch):
    """Logs of one real train_step and each trainable variable's gradient (-update / lr with lr = 1)."""
    variables = model.vnet.trainable_variables + model.discriminator.trainable_variables
    before = [v.numpy().astype(np.float64) for v in variables]
    logs = tf.function(model.train_step)(batch)
    grads = [b - v.numpy().astype(np.float64) for b, v in zip(before, variables)]
    owners = ["vnet"] * len(model.vnet.trainable_variables) + ["discriminator"] * len(
        model.discriminator.trainable_variables)
    return {k: float(v) for k, v in logs.items()}, list(zip(owners, [v.path for v in variables], grads))


@pytest.mark.parametrize("patch", NUMERICS_PATCHES)
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_matches_float32_and_stays_finite(policy, patch):
    batch = _blob_batch(patch)
    reference = _tiny_sassnet("float32")
    model = _tiny_sassnet(policy, weights_from=reference)  # the policy is reset after each test (conftest)
    logs32, grads32 = _first_step(reference, batch)
    logs, grads = _first_step(model, batch)
    for key in ("loss", "dice_loss", "sdm_loss", "adv_loss", "d_loss"):
        assert logs[key] == pytest.approx(logs32[key], rel=1e-2), (policy, key)
    for net in ("vnet", "discriminator"):
        norm32 = np.sqrt(sum((g ** 2).sum() for owner, _, g in grads32 if owner == net))
        norm = np.sqrt(sum((g ** 2).sum() for owner, _, g in grads if owner == net))
        assert norm == pytest.approx(norm32, rel=0.2), f"{policy}: {net} gradient norm {norm:.3g}, float32 {norm32:.3g}"
    for (_, name, g32), (_, _, g) in zip(grads32, grads):
        if name.endswith("kernel"):  # biases before a BatchNorm have a zero gradient in float32: no ratio
            ratio = np.linalg.norm(g) / np.linalg.norm(g32)
            assert 0.5 < ratio < 2.0, f"{policy}: gradient of {name} has {ratio:.3g} x the float32 norm"

    # A few ordinary training steps (dropout, momentum, the reference's rates) on the same data stay finite.
    model = _tiny_sassnet(policy, dropout=0.5, lr=0.01)
    step = tf.function(model.train_step)
    for i in range(6):
        logs = {k: float(v) for k, v in step(batch).items()}
        assert all(np.isfinite(v) for v in logs.values()), f"{policy}, step {i}: {logs}"
    assert all(np.isfinite(v.numpy()).all() for v in model.vnet.variables + model.discriminator.variables)
