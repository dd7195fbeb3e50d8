"""Typed, read-only run configuration, loaded from YAML with command-line overrides.

Every key is documented in ``configs/README.md`` and in the dataclass field comments below. Defaults are the
reference (SASSNet, LA, 16 labeled cases); YAML files in ``configs/`` only state what differs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, NoReturn, Optional

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the source, the key and what was expected."""


# The shipped configs live inside the package, so a non-editable `pip install` has them too (`configs/` at the top of
# the repository is a link to this folder).
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# Label counts the paper's LA protocol defines (configs/la_<N>labeled.yaml), each with the reference's consistency.
PROTOCOL_LABEL_COUNTS = (8, 16)


def shipped_config(name: str) -> str:
    """Path of a config shipped with the package; ConfigError when it is missing (a broken install), never a silent
    fall-back to the built-in defaults."""
    path = os.path.join(CONFIG_DIR, name)
    if not os.path.isfile(path):
        raise ConfigError(f"shipped config {name} not found in {CONFIG_DIR}: the sassnet-tf installation is "
                          "incomplete (reinstall it), or give --config PATH")
    return path


def resolve_config_path(path: str) -> str:
    """`path` itself when it exists, else the shipped config of that name (``--config la_8labeled.yaml`` works from
    any directory and after a non-editable install); ConfigError naming both places when neither exists."""
    if os.path.isfile(path) or os.path.dirname(path):
        return path if os.path.isfile(path) else _missing(path)
    shipped = os.path.join(CONFIG_DIR, path)
    return shipped if os.path.isfile(shipped) else _missing(path)


def _missing(path: str) -> NoReturn:
    names = sorted(n for n in os.listdir(CONFIG_DIR) if n.endswith(".yaml")) if os.path.isdir(CONFIG_DIR) else []
    raise ConfigError(f"{path}: config file not found (neither that path nor a shipped config; shipped: "
                      f"{', '.join(names)})")


def default_config(data_root: Optional[str], labeled: Optional[int]) -> tuple[str, str]:
    """(path, why) of the config used when none is given.

    Without a data root: the phantom demo. With one: the paper's LA protocol for `labeled` scans
    (`la_<N>labeled.yaml`, N = 16 when not given). For a label count the paper does not define, the protocol of the
    nearest defined count that is not below it is used, and the run's data.labeled is N: 8 for N <= 8 (consistency
    0.015, the reference's for 8 labeled scans), else 16 (consistency 0.01). The reason is returned for the log.
    """
    if not data_root:
        return shipped_config("phantom_demo.yaml"), "no --data-root: the built-in phantom demo"
    labeled = 16 if labeled is None else labeled
    if labeled in PROTOCOL_LABEL_COUNTS:
        return shipped_config(f"la_{labeled}labeled.yaml"), f"the paper's LA protocol for {labeled} labeled scans"
    nearest = next((n for n in PROTOCOL_LABEL_COUNTS if labeled <= n), PROTOCOL_LABEL_COUNTS[-1])
    return (shipped_config(f"la_{nearest}labeled.yaml"),
            f"the paper defines no protocol for {labeled} labeled scans: the one for {nearest} (its train.consistency "
            f"and schedule) with data.labeled={labeled}; give --config to choose another")


@dataclass(frozen=True)
class DataConfig:
    root: Optional[str] = None  # LA or NIfTI dataset root; None -> built-in phantom data
    format: str = "auto"  # auto | la | nifti
    train_list: str = "train.list"  # list file (relative to root) of training IDs
    test_list: str = "test.list"  # list file (relative to root) of evaluation IDs
    labeled: int = 16  # first N IDs of train_list are labeled, the rest unlabeled
    labeled_list: Optional[str] = None  # explicit list of labeled IDs (overrides `labeled`)
    unlabeled_list: Optional[str] = None  # explicit list of unlabeled IDs
    val_list: Optional[str] = None  # list of validation IDs (labels used for validation Dice only)
    patch_size: tuple = (112, 112, 80)  # random crop size (H, W, D); each divisible by 16
    labeled_bs: int = 2  # labeled patches per batch
    unlabeled_bs: int = 2  # unlabeled patches per batch
    downsample: int = 1  # integer factor per axis applied on reading (2 = "LA half resolution")
    num_parallel_calls: int = 2  # parallel crop/augment/SDM workers (0 = tf.data.AUTOTUNE)
    prefetch: int = 2  # batches prefetched ahead of the training step
    intensity_scale: tuple = (1.0, 1.0)  # option: training images times exp(U(ln lo, ln hi)); (1, 1) = off (reference)
    phantom_cases: int = 24  # built-in phantom: number of training cases generated
    phantom_test_cases: int = 4  # built-in phantom: number of test cases generated
    phantom_shape: tuple = (176, 144, 88)  # built-in phantom: median size (H, W, D); H, W vary per case like LA crops


@dataclass(frozen=True)
class ModelConfig:
    n_filters: int = 16  # V-Net base width (reference 16)
    normalization: str = "batchnorm"  # batchnorm | groupnorm | instancenorm | none
    dropout: float = 0.5  # channel-wise dropout rate on the bottleneck and last decoder feature
    ndf: int = 64  # discriminator base width (reference 64)


@dataclass(frozen=True)
class TrainConfig:
    mode: str = "sassnet"  # supervised | sdm | sassnet (the paper's ablation)
    iterations: int = 6000  # total network updates
    base_lr: float = 0.01  # network SGD learning rate
    momentum: float = 0.9  # network SGD momentum
    weight_decay: float = 1e-4  # network SGD weight decay (L2 added to the gradient, as torch SGD)
    lr_decay_steps: tuple = (2500, 5000)  # iterations at which lr is multiplied by lr_decay_factor
    lr_decay_factor: float = 0.1
    d_lr: float = 1e-4  # discriminator Adam learning rate
    d_beta_1: float = 0.9
    d_beta_2: float = 0.99
    seg_loss: str = "dice"  # dice (reference) | ce | ce_dice = (ce + dice) / 2, as the authors' V-Net-only scripts
    sdm_weight: float = 0.3  # weight of the SDM MSE in the supervised loss
    consistency: float = 0.01  # w(t) maximum: 0.01 for 16 labeled, 0.015 for 8 (reference)
    rampup_interval: int = 150  # w(t) uses t // rampup_interval ...
    rampup_length: int = 40  # ... over rampup_length intervals
    d_reuse_forward: bool = False  # option: D step reuses the network step's outputs instead of a 2nd forward pass
    seed: int = 1337
    precision: str = "auto"  # auto | float32 | mixed_float16 | mixed_bfloat16
    checkpoint_every: int = 200  # iterations between atomic checkpoints
    val_every: int = 200  # iterations between validation Dice evaluations (0 = never)
    val_cases: int = 2  # cases held for validation when no val_list is given (taken from the unlabeled tail)
    log_every: int = 10  # iterations between TensorBoard scalar writes
    image_every: int = 200  # iterations between TensorBoard image summaries (0 = never)
    keep_checkpoints: int = 2  # checkpoints kept on disk


@dataclass(frozen=True)
class EvalConfig:
    stride: tuple = (18, 18, 4)  # sliding-window stride (H, W, D)
    threshold: float = 0.5
    gaussian: bool = False  # Gaussian importance weighting instead of a plain average
    batch_size: int = 4  # windows per forward pass
    nms: bool = False  # keep the largest connected component (evaluate's default for --nms / --no-nms)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def replace(self, **dotted: Any) -> "Config":
        """Return a copy with dotted keys (``train.iterations=20``) replaced and validated."""
        return from_dict(_merge(self.to_dict(), _nest(dotted, source="<replace>")), source="<replace>")


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}
_CHOICES = {
    ("data", "format"): ("auto", "la", "nifti"),
    ("model", "normalization"): ("batchnorm", "groupnorm", "instancenorm", "none"),
    ("train", "mode"): ("supervised", "sdm", "sassnet"),
    ("train", "seg_loss"): ("dice", "ce", "ce_dice"),  # losses.SEGMENTATION_LOSSES (config does not import TF)
    ("train", "precision"): ("auto", "float32", "mixed_float16", "mixed_bfloat16"),
}


def valid_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _nest(dotted: dict, source: str) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        parts = key.split(".")
        if len(parts) != 2:
            raise ConfigError(f"{source}: key {key!r} must be section.name; valid keys: {', '.join(valid_keys())}")
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the type of the field's default; raise ConfigError naming `where`."""
    expected = type(default)
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: cannot parse {value!r}: {exc}") from None
    if value is None:
        return None
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if isinstance(default, tuple):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value] * (len(default) or 1)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list like {list(default)}, got {value!r}")
        if default and len(value) != len(default) and len(default) == 3:
            raise ConfigError(f"{where}: expected {len(default)} values, got {len(value)} ({value!r})")
        item = type(default[0]) if default else int
        try:
            return tuple(item(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected numbers, got {value!r}") from None
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(default, str) or default is None:
        return value if isinstance(value, str) or default is None else str(value)
    if not isinstance(value, expected):
        raise ConfigError(f"{where}: expected {expected.__name__}, got {value!r}")
    return value


def from_dict(raw: dict, source: str = "<dict>") -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections {list(_SECTIONS)}, got {type(raw).__name__}")
    sections = {}
    for name, values in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section {name!r}; valid sections: {', '.join(_SECTIONS)}")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, got {values!r}")
        cls = _SECTIONS[name]
        defaults = cls()
        kwargs = {}
        for key, value in values.items():
            if not hasattr(defaults, key):
                raise ConfigError(
                    f"{source}: unknown key {name}.{key}; valid keys: "
                    + ", ".join(f"{name}.{f.name}" for f in dataclasses.fields(cls))
                )
            where = f"{source}: {name}.{key}"
            kwargs[key] = _coerce(value, getattr(defaults, key), where)
            choices = _CHOICES.get((name, key))
            if choices and kwargs[key] not in choices:
                raise ConfigError(f"{where}: {kwargs[key]!r} is not one of {', '.join(choices)}")
        sections[name] = cls(**kwargs)
    config = Config(**sections)
    validate(config, source)
    return config


# The config key of each InferenceSettings field (the one validation of the sliding-window settings).
_INFERENCE_KEYS = {"patch_size": "data.patch_size", "downsample": "data.downsample"}


def validate(config: Config, source: str = "<config>") -> None:
    from sassnet_tf.data.errors import DataError
    from sassnet_tf.data.pipeline import check_intensity_scale
    from sassnet_tf.inference.settings import InferenceSettings, InferenceSettingsError

    d, t = config.data, config.train
    try:
        InferenceSettings.from_config(config)
    except InferenceSettingsError as exc:
        key = _INFERENCE_KEYS.get(exc.field, f"eval.{exc.field}")
        raise ConfigError(f"{source}: {key}{str(exc)[len(exc.field):]}") from None
    if d.labeled < 1:
        raise ConfigError(f"{source}: data.labeled must be >= 1, got {d.labeled}")
    try:
        check_intensity_scale(d.intensity_scale)
    except DataError:
        raise ConfigError(f"{source}: data.intensity_scale must be [lo, hi] with 0 < lo <= hi, "
                          f"got {list(d.intensity_scale)}") from None
    if d.labeled_bs < 1 or d.unlabeled_bs < 0:
        raise ConfigError(f"{source}: data.labeled_bs must be >= 1 and data.unlabeled_bs >= 0")
    if t.mode == "sassnet" and d.unlabeled_bs < 1:
        raise ConfigError(f"{source}: train.mode sassnet needs data.unlabeled_bs >= 1")
    if t.iterations < 1:
        raise ConfigError(f"{source}: train.iterations must be >= 1, got {t.iterations}")
    if t.checkpoint_every < 1:
        raise ConfigError(f"{source}: train.checkpoint_every must be >= 1, got {t.checkpoint_every}")


def load_config(path: Optional[str] = None, overrides: Optional[dict] = None) -> Config:
    """Load defaults <- YAML file at `path` <- dotted `overrides` (``{"train.iterations": "20"}``)."""
    raw: dict = {}
    source = "<defaults>"
    if path is not None:
        source = os.fspath(path)
        if not os.path.isfile(source):
            raise ConfigError(f"{source}: config file not found")
        try:
            with open(source, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of sections {list(_SECTIONS)}")
    base = from_dict(raw, source)
    if overrides:
        base = from_dict(_merge(base.to_dict(), _nest(overrides, "command line")), "command line")
    return base


def parse_overrides(items: list[str]) -> dict:
    """Parse ``["train.iterations=20", ...]`` into a dict; raise ConfigError on a malformed item."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"command line: override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def save_config(config: Config, path: str) -> None:
    """Write the resolved config as YAML, atomically."""
    from sassnet_tf.utils.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
