"""Process-wide TensorFlow settings that must be chosen before TensorFlow is imported."""

from __future__ import annotations

import os
import re
import sys

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def default_onednn_on() -> bool:
    """Turn TensorFlow's oneDNN CPU kernels on unless the user chose (``TF_ENABLE_ONEDNN_OPTS`` set) or it is too late.

    TensorFlow enables oneDNN by default only on CPUs with AVX-512-class features. On an AVX2 CPU (the 2-core EPYC
    this project is benchmarked on) the fallback Eigen kernels make 3D convolution gradients 3-5x slower and a
    full training iteration ~3x slower (docs/PERFORMANCE.md), while oneDNN gives the same float32 results to
    rounding. The variable is read once, when TensorFlow loads, so this only acts before ``import tensorflow``.

    Returns:
        True when this call set the variable.
    """
    if ONEDNN_ENV in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[ONEDNN_ENV] = "1"
    return True


def _first_cpu(cpuinfo_path: str) -> dict:
    """The first CPU's fields in `cpuinfo_path` (one read; its block ends at the first blank line); {} when
    unreadable."""
    fields = {}
    try:
        with open(cpuinfo_path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> tuple:
    """(model name, set of feature flags) of the first CPU in `cpuinfo_path`; ("unknown", set()) when unreadable.

    Read without TensorFlow, so benchmarks and the precision choice can ask before or after it loads.
    """
    fields = _first_cpu(cpuinfo_path)
    return fields.get("model name", "unknown"), set(fields.get("flags", "").split())


def cpu_vendor(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The first CPU's ``vendor_id`` ("GenuineIntel", "AuthenticAMD", ...); "unknown" when unreadable.

    The same bf16 flags run at different speeds on the two vendors' cores (`precision.auto_precision`)."""
    return _first_cpu(cpuinfo_path).get("vendor_id", "unknown")


DESCRIBED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_description(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name, family / model numbers and wide-vector / bf16 / AMX flags, as one line: sessions run on
    different machines, and a benchmark figure or a training run means little without the CPU that produced it.

    "AMD EPYC" alone does not tell Zen 3 (family 25), Zen 4 (25, model >= 0x10) and Zen 5 (26) apart; the flags in
    the parentheses are enough for `bf16_kind` to tell the bf16 hardware back from a recorded line."""
    fields = _first_cpu(cpuinfo_path)
    wide = sorted(set(fields.get("flags", "").split()) & set(DESCRIBED_FLAGS))
    family, model = fields.get("cpu family"), fields.get("model")
    kind = f", family {family} model {model}" if family and model else ""
    return f"{fields.get('model name', 'unknown')}{kind} ({' '.join(wide) or 'no avx2'})"


CPU_KINDS = ("amx", "avx512_bf16", "no_bf16")


def bf16_kind(flags) -> str:
    """The bf16 hardware a set of CPU feature flags names: "amx", "avx512_bf16" or "no_bf16" (AMX first: a CPU with
    AMX also has AVX512-BF16, and oneDNN then runs its AMX kernels)."""
    flags = set(flags)
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else "no_bf16"


def cpu_kind(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """Which bf16 hardware the CPU has: "amx" (AMX tiles), "avx512_bf16" (bf16 dot products, no AMX) or "no_bf16".

    The three kinds this project has met run different oneDNN bf16 kernels (Intel Xeon with AMX; AMD EPYC Zen 4/5;
    AMD EPYC Zen 3, which emulates bf16), so the precision choice and the kernel workarounds key on this one answer.
    """
    return bf16_kind(cpu_info(cpuinfo_path)[1])


def recorded_cpu_kind(description: str) -> str:
    """`bf16_kind` of a line `cpu_description` wrote (the flags are its last parenthesised words)."""
    match = re.search(r"\(([^()]*)\)\s*$", description or "")
    return bf16_kind(match.group(1).split() if match else ())


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (asks TensorFlow; the variable as a fallback)."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, but the only runtime answer
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return os.environ.get(ONEDNN_ENV, "").strip().lower() in ("1", "true")


def set_cpu_threads(threads: int) -> None:
    """Run TensorFlow's CPU ops on `threads` threads (intra- and inter-op pools) in this process.

    Two jobs with one thread each on a 2-core CPU do ~15 % more work than the same jobs one after the other on two
    threads (half-resolution SASSNet iteration: 8.4 s each side by side vs 4.9 s alone, docs/PERFORMANCE.md).
    Must run before TensorFlow executes its first op; afterwards TensorFlow refuses to change the pools.

    Raises:
        ValueError: `threads` is not a positive integer, or TensorFlow is already running.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as exc:
        raise ValueError(f"threads={threads}: TensorFlow is already running in this process ({exc}); "
                         "set the thread count before any TensorFlow op runs") from None
