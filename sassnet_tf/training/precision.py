"""Choose and apply the Keras dtype policy (`--precision auto|float32|mixed_float16|mixed_bfloat16`).

What `auto` picks, per machine kind, and why (measured on 2-core cloud VMs, docs/PERFORMANCE.md):

- GPU -> mixed_float16: float16 tensor cores; loss scaling on both optimizers (only a GPU can confirm its speed).
- CPU with AMX (Intel Xeon, Sapphire Rapids and later) -> mixed_bfloat16: oneDNN's AMX kernels, 3.45 s vs 6.92 s per
  full SASSNet iteration (session 39); their bf16 convolutions pass bench/probe_bf16_conv.py.
- AMD CPU with AVX512-BF16, no AMX (EPYC Zen 4 / Zen 5) -> mixed_bfloat16: native bf16 dot products, 6.8 s vs 11.2 s
  on Zen 4. oneDNN's bf16 filter gradient there is wrong on short axes; the model avoids that kernel
  (`sassnet_tf.models.safe_conv3d`).
- Intel CPU with AVX512-BF16, no AMX (a Xeon family 6 model 207 whose AMX the hypervisor hides) -> float32: its
  512-bit float32 FMAs are as fast as its bf16 dot products, so bf16 only adds casts: bf16 11.0 s vs float32 8.2 s
  per full SASSNet iteration, 2.17 s vs 1.54 s at half resolution, 0.48 s vs 0.25 s per inference window
  (session 24).
- CPU without native bf16 (AVX2 only, or AVX-512 without BF16) -> float32: oneDNN emulates bf16, ~9x slower than
  float32.
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from sassnet_tf.utils.runtime import cpu_kind, cpu_vendor

log = logging.getLogger("sassnet_tf")

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def cpu_has_native_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has bf16 arithmetic (AVX512-BF16 or AMX); without it oneDNN emulates bf16 and a convolution is
    ~9x slower than float32 (measured on an AVX2 EPYC)."""
    return cpu_kind(cpuinfo_path) != "no_bf16"


def cpu_has_fast_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when mixed_bfloat16 is faster than float32 on this CPU: AMX, or AVX512-BF16 on an AMD core (not on an
    Intel one without AMX, where native bf16 is slower than float32; the module's table)."""
    return _cpu_precision(cpuinfo_path)[0] == "mixed_bfloat16"


def _cpu_precision(cpuinfo_path: str) -> tuple[str, str]:
    """The faster precision on this CPU and why (the module's table)."""
    kind = cpu_kind(cpuinfo_path)
    if kind == "amx":
        return "mixed_bfloat16", "CPU with AMX: oneDNN's bf16 AMX kernels"
    if kind == "avx512_bf16" and cpu_vendor(cpuinfo_path) == "GenuineIntel":
        return "float32", ("Intel CPU with AVX512-BF16 and no AMX: its float32 kernels are faster than its bf16 ones "
                           "(8.2 s float32 vs 11.0 s bf16 per full SASSNet iteration)")
    if kind == "avx512_bf16":
        return "mixed_bfloat16", ("CPU with AVX512-BF16 and no AMX: native bf16 dot products (oneDNN's faulty bf16 "
                                  "filter gradient on short axes is avoided by the model)")
    return "float32", "CPU without native bf16 (no AVX512-BF16, no AMX): bf16 would be emulated, ~9x slower"


def auto_precision(has_gpu: bool | None = None, cpuinfo_path: str = "/proc/cpuinfo") -> tuple[str, str]:
    """The precision `auto` picks on this machine and the reason, as in the module's table.

    Args:
        has_gpu: whether TensorFlow sees a GPU (None: ask TensorFlow).
        cpuinfo_path: where to read the CPU flags.
    """
    if has_gpu is None:
        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    if has_gpu:
        return "mixed_float16", "GPU: float16 tensor cores, with loss scaling"
    return _cpu_precision(cpuinfo_path)


def resolve_precision(precision: str = "auto") -> str:
    """Map `auto` to float16 on GPU, bfloat16 on CPUs where it is faster, else float32 (`auto_precision`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return auto_precision()[0] if precision == "auto" else precision


def apply_precision(precision: str = "auto") -> str:
    """Set the global Keras dtype policy before models are built; log the choice (and auto's reason)."""
    if precision == "auto":
        resolved, reason = auto_precision()
        reason = f"auto: {reason}"
    else:
        resolved, reason = resolve_precision(precision), "requested"
    keras.mixed_precision.set_dtype_policy(resolved)
    log.info("precision: %s (%s)", resolved, reason)
    return resolved
