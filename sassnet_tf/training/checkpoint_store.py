"""Checkpoints of every variable of a run (networks, BatchNorm statistics, dropout RNG states, optimizer slots and
iteration counters), written atomically as one .npz per iteration.

tf.train.Checkpoint on Keras 3 models misses variables (54 of 180 for a small V-Net here: the dropout seed
states among them), which breaks an exact resume, so every variable is stored by position, with its path and
shape kept to check that the restored model is the same.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Callable, Optional

import numpy as np

from sassnet_tf.utils.atomic import atomic_path, atomic_write_text

_NAME = re.compile(r"ckpt-(\d+)\.npz$")


class CheckpointStoreError(ValueError):
    """A checkpoint does not fit the model it is restored into; the message names the file and the variable."""


class CheckpointStore:
    """Save and restore groups of variables.

    Args:
        directory: folder of ``ckpt-<iteration>.npz`` files and the ``latest`` pointer.
        groups: name -> callable returning the group's variables in a fixed order (called at save/restore time,
            since optimizer slots exist only once built).
        keep: number of checkpoints kept.
    """

    def __init__(self, directory: str, groups: dict[str, Callable[[], list]], keep: int = 2):
        self.directory = directory
        self.groups = groups
        self.keep = max(1, keep)

    def path(self, iteration: int) -> str:
        return os.path.join(self.directory, f"ckpt-{iteration:07d}.npz")

    def save(self, iteration: int) -> str:
        os.makedirs(self.directory, exist_ok=True)
        arrays, index = {}, {}
        for group, get in self.groups.items():
            variables = get()
            index[group] = [(v.path, list(v.shape)) for v in variables]
            for i, v in enumerate(variables):
                arrays[f"{group}/{i:05d}"] = np.asarray(v.numpy())
        arrays["__index__"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
        path = self.path(iteration)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
        atomic_write_text(os.path.join(self.directory, "latest"), os.path.basename(path) + "\n")
        self._prune()
        return path

    def _all(self) -> list:
        found = [(int(m.group(1)), p) for p in glob.glob(os.path.join(self.directory, "ckpt-*.npz"))
                 if (m := _NAME.search(p))]
        return [p for _, p in sorted(found)]

    def _prune(self) -> None:
        for p in self._all()[:-self.keep]:
            os.remove(p)

    def latest(self) -> Optional[str]:
        pointer = os.path.join(self.directory, "latest")
        if os.path.isfile(pointer):
            with open(pointer, encoding="utf-8") as fh:
                path = os.path.join(self.directory, fh.read().strip())
            if os.path.isfile(path):
                return path
        found = self._all()
        return found[-1] if found else None

    def restore(self, path: str) -> None:
        try:
            data = np.load(path)
            index = json.loads(bytes(data["__index__"]).decode())
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointStoreError(f"{path}: unreadable checkpoint ({exc})") from None
        for group, get in self.groups.items():
            variables = get()
            saved = index.get(group)
            if saved is None or len(saved) != len(variables):
                raise CheckpointStoreError(
                    f"{path}: group {group!r} holds {0 if saved is None else len(saved)} variables, the model has "
                    f"{len(variables)}; the checkpoint belongs to a different model or config")
            for i, (v, (name, shape)) in enumerate(zip(variables, saved)):
                if list(v.shape) != shape:
                    raise CheckpointStoreError(
                        f"{path}: {group} variable {i} ({name}) has shape {shape}, the model's {v.path} has "
                        f"{list(v.shape)}")
                v.assign(data[f"{group}/{i:05d}"])
