"""Model version folders under a TensorFlow Serving base path (pure Python: checked before TensorFlow loads).

tensorflow_model_server treats every folder of ``<base>`` whose name is an integer as a version and ignores the
rest, so hidden temporary folders (``.<N>.*.tmp``) written beside the versions are never served.
"""

from __future__ import annotations

import operator
import os
from typing import Optional

from sassnet_tf.export.errors import ExportError


def existing_versions(base_path: str) -> list[int]:
    """Version numbers present under `base_path` (numeric folder names, as tensorflow_model_server reads them).

    Args:
        base_path: the model base path (``MODELS/sassnet``); a missing folder has no versions.
    """
    try:
        names = os.listdir(base_path)
    except OSError:  # missing, not a folder, unreadable: no versions (the server keeps polling)
        return []
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(base_path, n)))


def next_version(base_path: str) -> int:
    """The newest version under `base_path` plus one (1 for an empty or missing base path).

    Args:
        base_path: the model base path.
    """
    versions = existing_versions(base_path)
    return versions[-1] + 1 if versions else 1


def prepare_base_path(base_path: str) -> str:
    """Create the model base path if needed and prove it is a writable folder; return its absolute path.

    Args:
        base_path: the model base path (--output).
    """
    base = os.path.abspath(os.fspath(base_path))
    if os.path.exists(base) and not os.path.isdir(base):
        raise ExportError(f"--output {base}: exists and is not a folder; expected a model base path (MODELS/sassnet)")
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"--output {base}: cannot create the model base path ({exc.strerror or exc})") from None
    if not os.access(base, os.W_OK | os.X_OK):
        raise ExportError(f"--output {base}: not writable; choose a folder you can write to")
    return base


def resolve_version(base: str, version: Optional[int]) -> int:
    """The version to write: `version` if it is a free positive integer, or the next one when None.

    Args:
        base: the (existing) model base path.
        version: the requested version or None.
    """
    if version is None:
        return next_version(base)
    # __index__: Python and numpy integers, not floats, strings or bools.
    if isinstance(version, bool) or not hasattr(version, "__index__") or operator.index(version) < 1:
        raise ExportError(f"--version {version!r}: expected a positive integer (TensorFlow Serving version number)")
    version = operator.index(version)
    if version in existing_versions(base):
        raise ExportError(
            f"{os.path.join(base, str(version))}: version {version} already exists; refusing to overwrite it. "
            f"Omit --version to write version {next_version(base)}, or remove the old folder first"
        )
    return version


__all__ = ["existing_versions", "next_version", "prepare_base_path", "resolve_version"]
