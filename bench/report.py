"""The one way every benchmark here reports: JSON on stdout and, with `--output`, the same text in a file.

The file is written atomically, so an interrupted benchmark never leaves half a report over an earlier one.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_model() -> str:
    """The CPU's model name and its wide-vector/bf16/AMX flags: sessions have run on different machines, and a
    figure means little without the CPU that produced it."""
    # Imported here, like atomic_write_text below: importing sassnet_tf sets TF_ENABLE_ONEDNN_OPTS, which
    # bench_train's children must not inherit (reports are written after they ran).
    from sassnet_tf.utils.runtime import cpu_info

    name, flags = cpu_info()
    wide = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    return f"{name} ({' '.join(wide) or 'no avx2'})"


def emit_report(report: dict, output: str | None) -> None:
    """Prints `report` as indented JSON and, when `output` is given, writes the same text there.

    The environment variable BENCH_CONTEXT, when set, is written as "context": what else the machine was doing (for
    example "background training paused with SIGSTOP"), which the load averages alone do not tell.
    """
    context = {"context": os.environ["BENCH_CONTEXT"]} if os.environ.get("BENCH_CONTEXT") else {}
    text = json.dumps({"cpu_model": cpu_model(), **context, **report}, indent=2)
    print(text)
    if output:
        # Imported here: importing sassnet_tf sets TF_ENABLE_ONEDNN_OPTS, which bench_train's children must not inherit.
        from sassnet_tf.utils.atomic import atomic_write_text

        atomic_write_text(output, text + "\n")
