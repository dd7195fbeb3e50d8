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
    family = _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    # "AMD EPYC" alone does not tell Zen 3 (family 25), Zen 4 (25, model >= 0x10) and Zen 5 (26) apart.
    kind = f", family {family[0]} model {family[1]}" if all(family) else ""
    return f"{name}{kind} ({' '.join(wide) or 'no avx2'})"


def _cpuinfo_field(key: str, path: str = "/proc/cpuinfo") -> str | None:
    """The first CPU's value of `key` in /proc/cpuinfo, or None."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


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
