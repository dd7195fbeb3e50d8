"""default_onednn_on: oneDNN on by default, the user's choice kept, nothing done once TensorFlow is loaded;
onednn_enabled reports what TensorFlow runs."""

import subprocess
import sys

import pytest

from sassnet_tf.utils import runtime


def test_sets_the_variable_only_when_unset_and_before_tensorflow(monkeypatch):
    monkeypatch.delenv(runtime.ONEDNN_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert runtime.default_onednn_on() is True
    assert runtime.os.environ[runtime.ONEDNN_ENV] == "1"

    monkeypatch.setenv(runtime.ONEDNN_ENV, "0")
    assert runtime.default_onednn_on() is False
    assert runtime.os.environ[runtime.ONEDNN_ENV] == "0"

    monkeypatch.delenv(runtime.ONEDNN_ENV)
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert runtime.default_onednn_on() is False
    assert runtime.ONEDNN_ENV not in runtime.os.environ


def test_importing_the_package_turns_onednn_on_in_tensorflow():
    code = ("import os, sassnet_tf; from tensorflow.python.util import _pywrap_util_port as p; "
            "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], p.IsMklEnabled())")
    env = {k: v for k, v in __import__("os").environ.items() if k != runtime.ONEDNN_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["1", "True"]


def test_onednn_enabled_matches_tensorflow(monkeypatch):
    from tensorflow.python.util import _pywrap_util_port

    assert runtime.onednn_enabled() is bool(_pywrap_util_port.IsMklEnabled())
    # The fallback, for TensorFlow builds without the private query, reads the variable.
    monkeypatch.delattr(_pywrap_util_port, "IsMklEnabled")
    monkeypatch.setenv(runtime.ONEDNN_ENV, "0")
    assert runtime.onednn_enabled() is False
    monkeypatch.setenv(runtime.ONEDNN_ENV, "True")
    assert runtime.onednn_enabled() is True


def test_set_cpu_threads_sets_both_pools_before_tensorflow_runs():
    code = ("from sassnet_tf.utils.runtime import set_cpu_threads; set_cpu_threads(1); import tensorflow as tf; "
            "tf.constant(1.0) + 1.0; c = tf.config.threading; "
            "print(c.get_intra_op_parallelism_threads(), c.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("threads", [0, -2, 1.5, True, "2"])
def test_set_cpu_threads_refuses_non_positive_integers(threads):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        runtime.set_cpu_threads(threads)


def test_set_cpu_threads_once_tensorflow_runs_says_so():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # the eager context is initialised
    with pytest.raises(ValueError, match="TensorFlow is already running"):
        runtime.set_cpu_threads(1)


def test_cpu_info_reads_the_first_cpus_model_and_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Xeon A\nflags\t\t: fpu avx2 amx_bf16\n\n"
                       "processor\t: 1\nmodel name\t: Xeon B\nflags\t\t: fpu\n")
    assert runtime.cpu_info(str(cpuinfo)) == ("Xeon A", {"fpu", "avx2", "amx_bf16"})
    assert runtime.cpu_info(str(tmp_path / "missing")) == ("unknown", set())


def test_cpu_vendor_reads_the_first_cpus_vendor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n")
    assert runtime.cpu_vendor(str(cpuinfo)) == "GenuineIntel"
    assert runtime.cpu_vendor(str(tmp_path / "missing")) == "unknown"


def test_cpu_description_names_the_model_its_family_and_its_bf16_hardware(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
                       "flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert runtime.cpu_description(str(cpuinfo)) == "AMD EPYC, family 26 model 2 (avx2 avx512_bf16 avx512f)"
    cpuinfo.write_text("model name\t: Old\nflags\t\t: fpu sse2\n")
    assert runtime.cpu_description(str(cpuinfo)) == "Old (no avx2)"


@pytest.mark.parametrize("flags, kind", [("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "amx"),
                                         ("fpu avx2 avx512f avx512_bf16", "avx512_bf16"),
                                         ("fpu avx2 avx512f", "no_bf16"), ("fpu avx2", "no_bf16")])
def test_cpu_kind_names_the_bf16_hardware(tmp_path, flags, kind):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: some CPU\nflags\t\t: {flags}\n")
    assert runtime.cpu_kind(str(cpuinfo)) == kind
    assert kind in runtime.CPU_KINDS


def test_cpu_kind_without_cpuinfo_is_no_bf16(tmp_path):
    assert runtime.cpu_kind(str(tmp_path / "missing")) == "no_bf16"


@pytest.mark.parametrize("description, kind", [
    ("Intel(R) Xeon(R) Processor, family 6 model 167 (amx_bf16 avx2 avx512_bf16 avx512f)", "amx"),
    ("AMD EPYC, family 25 model 17 (avx2 avx512_bf16 avx512f)", "avx512_bf16"),
    ("AMD EPYC 7B13, family 25 model 1 (avx2)", "no_bf16"), ("Old (no avx2)", "no_bf16"), ("", "no_bf16")])
def test_recorded_cpu_kind_reads_the_kind_back_from_a_description(description, kind):
    assert runtime.recorded_cpu_kind(description) == kind


def test_a_description_reads_back_as_the_cpus_own_kind(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    for flags in ("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "fpu avx2 avx512f avx512_bf16", "fpu avx2"):
        cpuinfo.write_text(f"processor\t: 0\ncpu family\t: 6\nmodel\t\t: 1\nmodel name\t: X (R) CPU\n"
                           f"flags\t\t: {flags}\n")
        assert runtime.recorded_cpu_kind(runtime.cpu_description(str(cpuinfo))) == runtime.cpu_kind(str(cpuinfo))
