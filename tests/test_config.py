"""Config loading, overrides and the errors users see."""

import dataclasses
import pathlib

import pytest

from sassnet_tf.config import Config, ConfigError, load_config, parse_overrides, save_config, valid_keys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_defaults_are_the_reference():
    c = Config()
    assert c.data.patch_size == (112, 112, 80) and c.data.labeled_bs == 2 and c.data.unlabeled_bs == 2
    assert c.train.iterations == 6000 and c.train.base_lr == 0.01 and c.train.lr_decay_steps == (2500, 5000)
    assert c.train.seed == 1337 and c.train.sdm_weight == 0.3 and c.eval.stride == (18, 18, 4)


def test_overrides_are_typed():
    c = load_config(None, parse_overrides(["train.iterations=20", "data.patch_size=[64, 64, 48]",
                                           "train.d_reuse_forward=true", "train.base_lr=2e-2"]))
    assert c.train.iterations == 20 and c.data.patch_size == (64, 64, 48)
    assert c.train.d_reuse_forward is True and c.train.base_lr == 0.02


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_config(None, {"train.learning_rate": "1"})
    assert "train.learning_rate" in str(err.value) and "train.base_lr" in str(err.value)


@pytest.mark.parametrize("override, words", [
    ({"data.patch_size": "[100, 112, 80]"}, "multiple of 16"),
    ({"train.iterations": "many"}, "expected an integer"),
    ({"train.mode": "fancy"}, "not one of"),
    ({"iterations": "3"}, "section.name"),
    ({"train.precision": "float64"}, "not one of"),
    ({"train.seg_loss": "bce"}, "'bce' is not one of dice, ce, ce_dice"),
    ({"data.intensity_scale": "[1.5, 0.5]"}, "data.intensity_scale must be [lo, hi] with 0 < lo <= hi"),
    ({"data.intensity_scale": "[0.5, 1.0, 2.0]"}, "data.intensity_scale must be [lo, hi]"),
])
def test_bad_values_are_named(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    assert words in str(err.value)


def test_bad_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  iterations: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_round_trip(tmp_path):
    c = load_config(None, {"train.iterations": "7", "model.n_filters": "4"})
    save_config(c, str(tmp_path / "c.yaml"))
    assert load_config(str(tmp_path / "c.yaml")) == c


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    load_config(str(REPO / "configs" / name))


def test_every_key_documented():
    doc = (REPO / "configs" / "README.md").read_text()
    missing = [k for k in valid_keys() if f"`{k}`" not in doc]
    assert not missing, f"configs/README.md does not document {missing}"


@pytest.mark.parametrize("data_root, labeled, name, labeled_in_run, consistency, why", [
    (None, None, "phantom_demo.yaml", None, None, "phantom demo"),
    (None, 8, "phantom_demo.yaml", None, None, "phantom demo"),
    ("LA", None, "la_16labeled.yaml", 16, 0.01, "protocol for 16 labeled"),
    ("LA", 16, "la_16labeled.yaml", 16, 0.01, "protocol for 16 labeled"),
    ("LA", 8, "la_8labeled.yaml", 8, 0.015, "protocol for 8 labeled"),
    ("LA", 2, "la_8labeled.yaml", 2, 0.015, "no protocol for 2 labeled scans: the one for 8"),
    ("LA", 12, "la_16labeled.yaml", 12, 0.01, "no protocol for 12 labeled scans: the one for 16"),
    ("LA", 40, "la_16labeled.yaml", 40, 0.01, "no protocol for 40 labeled scans: the one for 16"),
])
def test_the_default_config_follows_a_stated_rule(data_root, labeled, name, labeled_in_run, consistency, why):
    from sassnet_tf.config import default_config

    path, reason = default_config(data_root, labeled)
    assert pathlib.Path(path).name == name and why in reason
    if labeled_in_run is not None:  # what train.py then trains: the file plus --labeled
        config = load_config(path, {"data.labeled": labeled_in_run})
        assert config.data.labeled == labeled_in_run and config.train.consistency == consistency


def test_a_missing_shipped_config_is_an_error_not_the_defaults(monkeypatch, tmp_path):
    import sassnet_tf.config as config_module

    monkeypatch.setattr(config_module, "CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="installation is incomplete"):
        config_module.default_config("LA", 8)


def test_the_shipped_configs_are_in_the_package_and_the_repository_link():
    from sassnet_tf.config import CONFIG_DIR

    shipped = pathlib.Path(CONFIG_DIR)
    assert shipped.parent.name == "sassnet_tf" and (shipped / "README.md").is_file()
    assert (REPO / "configs").resolve() == shipped.resolve()  # configs/ at the top is the same folder
    for path in shipped.glob("*.yaml"):
        load_config(str(path))  # every shipped config is valid


def test_a_config_is_a_path_or_a_shipped_name(tmp_path, monkeypatch):
    from sassnet_tf.config import CONFIG_DIR, resolve_config_path

    monkeypatch.chdir(tmp_path)  # any directory: the name finds the shipped file
    assert resolve_config_path("la_8labeled_half.yaml") == str(pathlib.Path(CONFIG_DIR) / "la_8labeled_half.yaml")
    mine = tmp_path / "la_8labeled_half.yaml"
    mine.write_text("train:\n  iterations: 5\n")
    assert resolve_config_path("la_8labeled_half.yaml") == "la_8labeled_half.yaml"  # a file here wins
    with pytest.raises(ConfigError, match="shipped: .*la_16labeled.yaml"):
        resolve_config_path("la_3labeled.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config_path(str(tmp_path / "sub" / "la_8labeled.yaml"))


def test_intensity_scale_is_off_by_default_and_keeps_fractions():
    assert load_config(None).data.intensity_scale == (1.0, 1.0)
    assert load_config(None, {"data.intensity_scale": "[0.33, 1.8]"}).data.intensity_scale == (0.33, 1.8)


def test_the_segmentation_loss_choices_are_the_losses_module_kinds():
    from sassnet_tf import losses
    from sassnet_tf.config import _CHOICES

    assert _CHOICES[("train", "seg_loss")] == losses.SEGMENTATION_LOSSES
    assert load_config(None).train.seg_loss == "dice"  # the reference
