"""The one way every benchmark here reports: JSON on stdout and, with `--output`, the same text in a file.

The file is written atomically, so an interrupted benchmark never leaves half a report over an earlier one.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_model() -> str:
    """The CPU's model name, family / model and wide-vector / bf16 / AMX flags (`runtime.cpu_description`)."""
    # Imported here, like atomic_write_text below: importing sassnet_tf sets TF_ENABLE_ONEDNN_OPTS, which
    # bench_train's children must not inherit (reports are written after they ran).
    from sassnet_tf.utils.runtime import cpu_description

    return cpu_description()


def timings(fn, repeats: int, warmup: bool = True) -> tuple:
    """(median, every time rounded to 0.1 ms) of `repeats` wall-timed calls of `fn`, after one untimed call when
    `warmup` (primitive creation, allocation)."""
    import statistics
    import time

    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return statistics.median(times), [round(t, 4) for t in times]


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn` after one warm-up call (`timings`)."""
    return timings(fn, repeats)[0]


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
