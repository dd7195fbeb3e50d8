"""Atomic writes: write beside the target, fsync, then rename, so a reader never sees a half-written file.

Temporaries are hidden and named ``.<target>.<pid>.<random>.tmp[<suffix>]``: a process killed while writing (SIGKILL,
OOM) leaves one behind, which `remove_stale_temporaries` later recognises by its writer's pid being gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from typing import Iterator

_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp")


def _prefix(path: str) -> str:
    return f".{os.path.basename(path)}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str) -> list:
    """Remove the temporaries in `folder` (not below it) whose writing process no longer runs; returns their paths.

    Those of live processes (an export or a training run writing right now) are kept.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TEMPORARY.match(name)
        if not match or _alive(int(match.group("pid"))):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path in the target's folder; on success rename it onto `path`, else remove it.

    `suffix` keeps an extension some writers need (``.nii.gz``, ``.weights.h5``).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp" + suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yield a temporary folder beside `path`; on success rename it to `path` (which must not exist)."""
    path = os.fspath(path).rstrip("/")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(path):
        raise FileExistsError(f"{path}: already exists; refusing to overwrite it")
    tmp = tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=parent)
    try:
        yield tmp
        if os.path.exists(path):
            raise FileExistsError(f"{path}: appeared while writing; refusing to overwrite it")
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
