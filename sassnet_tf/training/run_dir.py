"""The training run folder: what train.py writes and evaluate/export read.

Layout (docs/DESIGN.md)::

    RUN/config.yaml                     resolved config
    RUN/run.json                        run id, config hash, iteration, status, best validation Dice
    RUN/logs/                           TensorBoard
    RUN/checkpoints/                    both networks, both optimizers, the iteration
    RUN/weights/vnet_{best,last}.weights.h5, RUN/weights/discriminator_last.weights.h5
    RUN/.lock                           held (flock) by the training process using the folder: pid, host, since

Two processes training into one folder would interleave their checkpoints, so the training process holds an
exclusive `flock` on RUN/.lock for as long as it trains; the kernel drops it when the process ends, however it ends
(SIGKILL too), so a lock is never stale. A second `--resume` of a folder in use is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from typing import Optional

import yaml

try:
    import fcntl
except ImportError:  # not POSIX: no folder lock (TensorFlow's CPU wheels are POSIX-only anyway)
    fcntl = None

from sassnet_tf.config import Config, ConfigError, from_dict, save_config
from sassnet_tf.utils.atomic import atomic_path, atomic_write_text, remove_stale_temporaries

log = logging.getLogger("sassnet_tf")

CONFIG = "config.yaml"
RUN_JSON = "run.json"
LOCK = ".lock"
LOCK_RETRY_SECONDS = 2.0  # `in_use` holds a shared lock for an instant: a start retries before calling it a conflict


class RunDirError(ValueError):
    """The output or run folder cannot be used as asked; the message names it and says what to do."""


def config_sha(config: Config) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


class RunDir:
    """Paths and bookkeeping of one run folder."""

    def __init__(self, path: str):
        self.path = os.path.abspath(os.fspath(path))
        self._created = None  # by `prepare` of a new run: whether it created the folder itself
        self._lock = None  # the descriptor holding RUN/.lock while this process trains here

    # paths
    config_path = property(lambda self: os.path.join(self.path, CONFIG))
    run_json_path = property(lambda self: os.path.join(self.path, RUN_JSON))
    logs = property(lambda self: os.path.join(self.path, "logs"))
    checkpoints = property(lambda self: os.path.join(self.path, "checkpoints"))
    weights = property(lambda self: os.path.join(self.path, "weights"))

    def weights_path(self, network: str, which: str) -> str:
        return os.path.join(self.weights, f"{network}_{which}.weights.h5")

    def exists(self) -> bool:
        return os.path.isfile(self.run_json_path) or os.path.isfile(self.config_path)

    def read_state(self) -> dict:
        try:
            with open(self.run_json_path, encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            raise RunDirError(f"{self.path}: not a sassnet-tf run folder (no {RUN_JSON})") from None
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{self.run_json_path}: unreadable ({exc})") from None

    def write_state(self, state: dict) -> None:
        state = dict(state, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_text(self.run_json_path, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def read_config(self) -> Config:
        if not os.path.isfile(self.config_path):
            raise RunDirError(f"{self.path}: no {CONFIG}; expected a folder written by train.py")
        with open(self.config_path, encoding="utf-8") as fh:
            return from_dict(yaml.safe_load(fh) or {}, self.config_path)

    def check(self, config: Config, resume: bool) -> Optional[Config]:
        """Refuse, before anything is written, an output that `prepare` could not use; returns the saved config
        when resuming.

        New run: the folder must not hold a run, must be empty if it exists, and must be creatable (no regular file on
        the path, a writable parent). Resume: a run must be there, with the same config (train.iterations aside).
        """
        if resume:
            if not self.exists():
                raise RunDirError(f"{self.path}: --resume given but there is no run here to resume")
            self.acquire()
            saved = self.read_config()
            if _comparable(saved) != _comparable(config):
                diff = _diff(saved.to_dict(), config.to_dict())
                raise RunDirError(
                    f"{self.path}: --resume with a different config ({'; '.join(diff)}). Only train.iterations may "
                    "change on resume; start a new run in another --output folder instead"
                )
            return saved
        if self.exists():
            raise RunDirError(
                f"{self.path}: already holds a run ({RUN_JSON} / {CONFIG}); refusing to overwrite it. "
                "Pass --resume to continue it, or choose another --output"
            )
        if os.path.isdir(self.path):
            if os.listdir(self.path):
                raise RunDirError(f"{self.path}: exists and is not empty; choose an empty or new --output folder")
            return None
        parent = self.path  # the path itself (a file?) or its nearest existing ancestor must be a writable folder
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise RunDirError(f"{self.path}: cannot create the run folder: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunDirError(f"{self.path}: cannot create the run folder: {parent} is not writable")
        return None

    def prepare(self, config: Config, resume: bool) -> dict:
        """Create a new run folder or reopen one to resume; refuse to overwrite a different run (`check`).

        Returns the run state (run.json contents).
        """
        saved = self.check(config, resume)
        if resume:
            for folder in (self.path, self.checkpoints, self.weights):  # left by a process killed while writing
                for path in remove_stale_temporaries(folder):
                    log.info("removed %s, a temporary file of an earlier, killed process", path)
            state = self.read_state()
            if config.train.iterations != saved.train.iterations:
                save_config(config, self.config_path)
                state["config_sha"] = config_sha(config)
            return state
        self._created = not os.path.isdir(self.path)
        for folder in (self.path, self.logs, self.checkpoints, self.weights):
            os.makedirs(folder, exist_ok=True)
        self.acquire()
        save_config(config, self.config_path)
        state = {"run_id": uuid.uuid4().hex[:12], "config_sha": config_sha(config), "iteration": 0,
                 "status": "running", "best": None}
        self.write_state(state)
        return state

    def acquire(self) -> None:
        """Hold RUN/.lock for this process (a no-op when already held); RunDirError naming the holder when another
        live process trains in the folder."""
        if self._lock is not None or fcntl is None:
            return
        fd = os.open(os.path.join(self.path, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                os.close(fd)
                raise RunDirError(
                    f"{self.path}: in use by another training process ({_describe_holder(self.path)}). Wait for it "
                    "to finish, or stop it (Ctrl-C or SIGTERM saves a checkpoint), then --resume"
                ) from None
        self._lock = fd
        try:  # who holds it, for the message a second process gets; the lock itself does not need it
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        except OSError as exc:
            log.warning("%s: could not note this process in %s: %s", self.path, LOCK, exc)

    def release(self) -> None:
        """Let go of RUN/.lock (closing the descriptor drops the flock; the file stays, harmless)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def discard_new(self) -> bool:
        """Remove what `prepare` created for a new run that never reached a checkpoint (iteration 0), so a failed
        start does not block the same --output; the folder itself stays if it existed (empty) before. Returns
        whether anything was removed."""
        if self._created is None or self.read_state().get("iteration", 0) != 0:
            return False
        if self._created:
            shutil.rmtree(self.path, ignore_errors=True)
            return True
        for name in os.listdir(self.path):
            target = os.path.join(self.path, name)
            if os.path.isdir(target):
                shutil.rmtree(target, ignore_errors=True)
            else:
                os.remove(target)
        return True


def _describe_holder(path: str) -> str:
    try:
        with open(os.path.join(path, LOCK), encoding="utf-8") as fh:
            holder = json.load(fh)
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its details unreadable"


def in_use(path: str) -> Optional[bool]:
    """Whether a live process trains in the run folder `path` (holds its lock); None when the folder has no lock
    file (no run, or one written before the lock existed), so run.json's status is all there is to go by."""
    lock = os.path.join(os.fspath(path), LOCK)
    if fcntl is None or not os.path.isfile(lock):
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:  # unreadable: cannot tell
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock taken just now
    return False


def _comparable(config: Config) -> dict:
    d = config.to_dict()
    d["train"].pop("iterations")
    return d


def _diff(a: dict, b: dict, prefix: str = "") -> list:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb and f"{prefix}{k}" != "train.iterations":
            out.append(f"{prefix}{k}: run has {va!r}, asked {vb!r}")
    return out


def save_weights_atomic(model, path: str) -> None:
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def load_vnet(run_dir: str, weights: str = "best", precision: Optional[str] = None):
    """Rebuild the run's V-Net and load its `best` or `last` weights; return ``(vnet, config)``.

    Falls back from `best` to `last` when the run never validated. `precision` (default: the run's) sets the
    dtype policy the network is built with.
    """
    from sassnet_tf.models import build_vnet
    from sassnet_tf.training.precision import apply_precision

    if weights not in ("best", "last"):
        raise RunDirError(f"--weights {weights!r}: expected best or last")
    run = RunDir(run_dir)
    if not os.path.isdir(run.path):
        raise RunDirError(f"{run.path}: run folder not found")
    config = run.read_config()
    path = run.weights_path("vnet", weights)
    if weights == "best" and not os.path.isfile(path):
        path = run.weights_path("vnet", "last")
    if not os.path.isfile(path):
        raise RunDirError(f"{run.path}: no V-Net weights ({os.path.basename(path)}) in {run.weights}; "
                          "has the run saved a checkpoint yet?")
    apply_precision(precision or config.train.precision)
    m = config.model
    vnet = build_vnet(n_filters=m.n_filters, normalization=m.normalization, dropout=m.dropout)
    try:
        vnet.load_weights(path)
    except (ValueError, OSError) as exc:
        raise RunDirError(f"{path}: cannot load V-Net weights into the model of {run.config_path}: {exc}") from None
    return vnet, config


__all__ = ["RunDir", "RunDirError", "ConfigError", "load_vnet", "save_weights_atomic", "config_sha"]
