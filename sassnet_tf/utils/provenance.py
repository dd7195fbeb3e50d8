"""What produced a result: the code's version and the machine, as a training run records them per session."""

from __future__ import annotations

import os
import subprocess

import sassnet_tf

PACKAGE_DIR = os.path.dirname(os.path.abspath(sassnet_tf.__file__))


def code_version(path: str = PACKAGE_DIR) -> str:
    """The git commit of the checkout holding `path` (short hash, "+changes" when tracked files under `path` differ
    from it), or the package version when it is not a git checkout (an installed wheel) or git is missing."""
    def git(*args):
        return subprocess.run(["git", "-C", path, *args], capture_output=True, text=True, timeout=20, check=True)

    try:
        commit = git("rev-parse", "--short=12", "HEAD").stdout.strip()
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"sassnet_tf {sassnet_tf.__version__}"
    return f"git {commit}{'+changes' if changed else ''}"
