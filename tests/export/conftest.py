"""Tiny training run folders and exports shared by the export tests (V-Net n_filters=2, patch 32x32x16)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

PATCH = (32, 32, 16)
STRIDE = (16, 16, 8)
BATCH = 2


def make_run(folder, precision: str = "float32", n_filters: int = 2, which: str = "best", **overrides) -> str:
    """Write a run folder as train.py would leave it: config.yaml and weights/vnet_<which>.weights.h5.

    Args:
        folder: the run folder to create.
        precision: train.precision of the run (also the policy the weights are saved under).
        n_filters: V-Net width.
        which: "best" or "last" weights.
        **overrides: dotted config keys (``eval.threshold=0.4``).
    """
    import keras

    from sassnet_tf.config import Config, save_config
    from sassnet_tf.models import build_vnet

    folder = str(folder)
    config = Config().replace(**{
        "data.patch_size": list(PATCH),
        "model.n_filters": n_filters,
        "eval.stride": list(STRIDE),
        "eval.batch_size": BATCH,
        "train.precision": precision,
        **overrides,
    })
    os.makedirs(os.path.join(folder, "weights"), exist_ok=True)
    save_config(config, os.path.join(folder, "config.yaml"))
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(7)
        vnet = build_vnet(n_filters=n_filters)
        vnet.save_weights(os.path.join(folder, "weights", f"vnet_{which}.weights.h5"))
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    return folder


@pytest.fixture(scope="session")
def float_run(tmp_path_factory) -> str:
    return make_run(tmp_path_factory.mktemp("runs") / "float32")


@pytest.fixture(scope="session")
def bf16_run(tmp_path_factory) -> str:
    return make_run(tmp_path_factory.mktemp("runs") / "bf16", precision="mixed_bfloat16")


def load_run(run: str):
    """(vnet, config) through the lead's loader, the dtype policy restored afterwards."""
    import keras

    from sassnet_tf.training.run_dir import load_vnet

    previous = keras.mixed_precision.dtype_policy()
    try:
        return load_vnet(run, "best")
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def settings_of(config) -> dict:
    """export_saved_model keyword arguments from a run config (as the CLI derives them)."""
    e = config.eval
    return dict(
        patch_size=tuple(config.data.patch_size),
        stride=tuple(e.stride),
        threshold=e.threshold,
        gaussian=e.gaussian,
        batch_size=e.batch_size,
        preprocessing={"normalize": "zscore", "downsample": config.data.downsample},
        config=config,
    )


def export_run(run: str, base) -> SimpleNamespace:
    """Export a run folder's V-Net once; keep the in-memory module (already traced) for comparisons.

    Returns:
        namespace with path (the version folder), vnet, module and config.
    """
    from sassnet_tf.export import SegmentationModule, save_module

    vnet, config = load_run(run)
    module = SegmentationModule(vnet, **settings_of(config))
    path = save_module(module, str(base))
    return SimpleNamespace(path=path, vnet=vnet, module=module, config=config)


@pytest.fixture(scope="session")
def float_export(tmp_path_factory, float_run) -> SimpleNamespace:
    """The float32 run exported as MODELS/sassnet/1."""
    return export_run(float_run, tmp_path_factory.mktemp("models") / "sassnet")


@pytest.fixture(scope="session")
def bf16_export(tmp_path_factory, bf16_run) -> SimpleNamespace:
    """The mixed_bfloat16 run exported as MODELS/sassnet/1 (another base path)."""
    return export_run(bf16_run, tmp_path_factory.mktemp("models_bf16") / "sassnet")


@pytest.fixture(scope="session")
def run_factory():
    """`make_run` for tests that need a run folder of their own."""
    return make_run


@pytest.fixture(scope="session")
def export_settings():
    """`settings_of`: export keyword arguments from a run config."""
    return settings_of
