"""Where the LA data and the recorded LA runs lie: `<records>/<row>[-seed<S>]/...`, as `la_results` writes them.

The naming rule lives here once: `la_results` names its runs and records with `run_name`, and the analysis tools
(case_errors, case_intensity, training_balance) read them back with `recorded_files`. The LA release's default place
is here once too (`LA_ROOT`, `default_la_root`), for every tool's `--data-root`.
"""

from __future__ import annotations

import glob
import os
import re

SEED_SUFFIX = re.compile(r"-seed\d+$")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The LA release beside the checkout, relative to the repository root: as the configs' data.root and the commands
# la_results writes (which run from the root) name it.
LA_ROOT = "../shared/data/LA"


def default_la_root() -> str:
    """`LA_ROOT` as an absolute path, so a tool run from any working directory finds the release."""
    return os.path.normpath(os.path.join(REPO, LA_ROOT))


def run_name(row: str, seed) -> str:
    """Folder name of a row's run and record: the row's key, with "-seed<S>" for protocols with seeds."""
    return row if seed is None else f"{row}-seed{seed}"


def row_of(run: str) -> str:
    """The row key of a run or record folder name ("sassnet_8-seed1338" -> "sassnet_8")."""
    return SEED_SUFFIX.sub("", run)


def recorded_files(records: str, *relpath: str, rows=None) -> list:
    """[(row, run, path)] of every `<records>/<run>/<relpath>` that exists, by run name; with `rows`, only theirs."""
    found = []
    for path in sorted(glob.glob(os.path.join(glob.escape(records), "*", *map(glob.escape, relpath)))):
        run = os.path.relpath(path, records).split(os.sep)[0]
        row = row_of(run)
        if rows is None or row in rows:
            found.append((row, run, path))
    return found
