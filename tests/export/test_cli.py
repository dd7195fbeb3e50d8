"""export.py / sassnet-export: defaults from the run's config, overrides, versions, and clear errors (exit 2)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from sassnet_tf.export import cli
from sassnet_tf.export.saved_model import ASSETS_EXTRA, METADATA_FILE

REPO = pathlib.Path(__file__).resolve().parents[2]


def metadata(version_dir):
    with open(os.path.join(version_dir, ASSETS_EXTRA, METADATA_FILE), encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def half_res_run(tmp_path_factory, run_factory):
    """A float32 run with data.downsample 2 and eval.gaussian true, to see the config reach the metadata."""
    return run_factory(tmp_path_factory.mktemp("cli_runs") / "run", **{"data.downsample": 2, "eval.gaussian": True})


def test_defaults_come_from_the_run_and_flags_override_them(half_res_run, tmp_path, capsys):
    base = tmp_path / "models" / "sassnet"
    assert cli.main(["--run", half_res_run, "--output", str(base)]) == 0
    assert f"exported {base / '1'} (version 1)" in capsys.readouterr().out
    first = metadata(base / "1")
    assert first["patch_size"] == [32, 32, 16] and first["stride"] == [16, 16, 8]
    assert first["threshold"] == 0.5 and first["gaussian"] is True and first["batch_size"] == 2
    assert first["preprocessing"] == {"normalize": "zscore", "downsample": 2}
    assert first["model"]["n_filters"] == 2 and first["config"]["data"]["downsample"] == 2

    argv = ["--run", half_res_run, "--output", str(base), "--stride", "8", "8", "4", "--no-gaussian",
            "--batch-size", "3", "--threshold", "0.4", "--no-warmup"]
    assert cli.main(argv) == 0
    second = metadata(base / "2")
    assert second["stride"] == [8, 8, 4] and second["gaussian"] is False
    assert second["batch_size"] == 3 and second["threshold"] == 0.4
    assert not os.path.exists(base / "2" / ASSETS_EXTRA / "tf_serving_warmup_requests")
    assert sorted(os.listdir(base)) == ["1", "2"]  # no temporary folders left behind

    assert cli.main(["--run", half_res_run, "--output", str(base), "--version", "2"]) == 2
    err = capsys.readouterr().err
    assert "version 2 already exists; refusing to overwrite" in err and "Traceback" not in err


@pytest.fixture
def capture_export(monkeypatch):
    """Replace the export itself: record what the CLI would export (the loading and defaults stay real)."""
    import sassnet_tf.export.saved_model as saved_model

    calls = []

    def fake_export(vnet, base_path, version=None, **settings):
        calls.append({"policy": vnet.dtype_policy.name, "version": version, **settings})
        return os.path.join(base_path, str(version or 1))

    monkeypatch.setattr(saved_model, "export_saved_model", fake_export)
    return calls


def test_the_run_precision_is_kept_unless_overridden(bf16_run, tmp_path, capture_export, monkeypatch, caplog):
    import sassnet_tf.training.precision as precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert cli.main(["--run", bf16_run, "--output", str(tmp_path / "m")]) == 0
    assert "no native bf16" in caplog.text  # bf16 kernels for CPUs like this one: warned
    caplog.clear()
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)  # an Intel CPU with AMX hidden
    assert cli.main(["--run", bf16_run, "--output", str(tmp_path / "m")]) == 0
    assert "slower than float32" in caplog.text
    caplog.clear()
    assert cli.main(["--run", bf16_run, "--output", str(tmp_path / "m"), "--precision", "float32"]) == 0
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert cli.main(["--run", bf16_run, "--output", str(tmp_path / "m")]) == 0
    assert "Export with --precision float32" not in caplog.text
    assert [c["policy"] for c in capture_export] == ["mixed_bfloat16", "mixed_bfloat16", "float32", "mixed_bfloat16"]


@pytest.mark.parametrize(
    "make_argv, message",
    [
        (lambda run, tmp: ["--run", str(tmp / "missing"), "--output", str(tmp / "m")], "run folder not found"),
        (lambda run, tmp: ["--run", run, "--weights", "last", "--output", str(tmp / "m")], "no V-Net weights"),
        (lambda run, tmp: ["--run", run, "--output", str(tmp / "file" / "m")], "cannot create the model base path"),
        (lambda run, tmp: ["--run", run, "--output", str(tmp / "m"), "--version", "0"], "positive integer"),
        (lambda run, tmp: ["--run", run, "--output", str(tmp / "m"), "--stride", "40", "8", "4"],
         "at most the patch size"),
        (lambda run, tmp: ["--run", run, "--output", str(tmp / "m"), "--threshold", "1.5"], "threshold"),
    ],
    ids=["missing-run", "missing-weights", "unwritable-output", "bad-version", "bad-stride", "bad-threshold"],
)
def test_bad_requests_exit_2_with_a_clear_message(float_run, tmp_path, capsys, make_argv, message):
    (tmp_path / "file").write_text("a file where a folder is needed")
    assert cli.main(make_argv(float_run, tmp_path)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "m").exists() or os.listdir(tmp_path / "m") == []


def test_top_level_export_py_reports_errors_without_a_traceback(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(REPO / "export.py"), "--run", str(tmp_path / "nope"), "--output", str(tmp_path / "m")],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "run folder not found" in result.stderr and "Traceback" not in result.stderr
