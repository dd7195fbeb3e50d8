"""Precision selection: auto picks bf16 only on CPUs with native bf16."""

import keras
import pytest

from sassnet_tf.training import precision


def test_cpu_flags(tmp_path):
    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile\n")
    without = tmp_path / "b"
    without.write_text("processor : 0\nflags : fpu sse avx2 fma\n")
    assert precision.cpu_has_fast_bf16(str(with_bf16))
    assert not precision.cpu_has_fast_bf16(str(without))
    assert not precision.cpu_has_fast_bf16(str(tmp_path / "missing"))


def test_auto_without_gpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert precision.resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert precision.resolve_precision("auto") == "float32"


def test_apply_and_reject():
    assert precision.apply_precision("mixed_float16") == "mixed_float16"
    assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
    with pytest.raises(ValueError, match="not one of"):
        precision.resolve_precision("float8")
