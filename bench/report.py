"""The one way every benchmark here reports: JSON on stdout and, with `--output`, the same text in a file.

The file is written atomically, so an interrupted benchmark never leaves half a report over an earlier one.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def emit_report(report: dict, output: str | None) -> None:
    """Prints `report` as indented JSON and, when `output` is given, writes the same text there."""
    text = json.dumps(report, indent=2)
    print(text)
    if output:
        # Imported here: importing sassnet_tf sets TF_ENABLE_ONEDNN_OPTS, which bench_train's children must not inherit.
        from sassnet_tf.utils.atomic import atomic_write_text

        atomic_write_text(output, text + "\n")
