"""train.py end to end on a tiny LA-layout dataset: outputs, refusals, bad input, and kill + resume."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from sassnet_tf.config import load_config
from sassnet_tf.train import main
from tests.training.tiny_la import TINY, write_tiny_la

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_tiny_la(tmp_path_factory.mktemp("la"))


def train_args(data_root, output, *extra):
    return ["--data-root", data_root, "--output", str(output), "--labeled", "2", "--no-progress", *TINY, *extra]


def test_run_folder_contents(data_root, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(data_root, out, "--iterations", "4")) == 0
    state = json.loads((out / "run.json").read_text())
    assert state["status"] == "completed" and state["iteration"] == 4
    assert state["best"] and 0.0 <= state["best"]["dice"] <= 1.0
    for name in ("vnet_best", "vnet_last", "discriminator_last"):
        assert (out / "weights" / f"{name}.weights.h5").is_file()
    assert (out / "config.yaml").is_file() and any((out / "checkpoints").iterdir())
    # --labeled 2 has no config of its own: the 8-label protocol's (consistency 0.015), with 2 labeled scans
    saved = load_config(str(out / "config.yaml"))
    assert saved.data.labeled == 2 and saved.train.consistency == 0.015 and saved.train.mode == "sassnet"
    events = list((out / "logs").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    # an existing run is never overwritten without --resume
    before = (out / "weights" / "vnet_last.weights.h5").read_bytes()
    assert main(train_args(data_root, out, "--iterations", "4")) == 2
    assert (out / "weights" / "vnet_last.weights.h5").read_bytes() == before


@pytest.mark.parametrize("extra, words", [
    (["train.no_such_key=1"], "valid keys"),
    (["--labeled", "99"], "99"),
    (["data.patch_size=[30,32,16]"], "multiple of 16"),
    (["--threads", "0"], "--threads: threads must be a positive integer, got 0"),
])
def test_bad_input_is_a_clear_error(data_root, tmp_path, capsys, extra, words):
    assert main(train_args(data_root, tmp_path / "run", "--iterations", "2", *extra)) == 2
    assert words in capsys.readouterr().err


def _run(args, env=None):
    return subprocess.run([sys.executable, "-m", "sassnet_tf.train", *args], cwd=REPO, capture_output=True,
                          text=True, env=dict(os.environ, **(env or {})), timeout=600)


def _weights(path):
    with h5py.File(path, "r") as f:
        out = []
        f.visititems(lambda name, obj: out.append((name, obj[()])) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_killed_run_resumes_to_the_same_state(data_root, tmp_path):
    straight = tmp_path / "straight"
    killed = tmp_path / "killed"
    r = _run(train_args(data_root, straight, "--iterations", "6"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(train_args(data_root, killed, "--iterations", "6"), env={"SASSNET_TF_TEST_KILL_AT_ITERATION": "3"})
    assert r.returncode != 0  # SIGKILL after iteration 3; the newest checkpoint is iteration 2
    assert json.loads((killed / "run.json").read_text())["iteration"] == 2
    r = _run(train_args(data_root, killed, "--iterations", "6", "--resume"))
    assert r.returncode == 0, r.stderr[-2000:]
    a = _weights(straight / "weights" / "vnet_last.weights.h5")
    b = _weights(killed / "weights" / "vnet_last.weights.h5")
    assert [n for n, _ in a] == [n for n, _ in b]
    for (name, x), (_, y) in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)
    for name in ("discriminator_last",):
        for (n, x), (_, y) in zip(_weights(straight / "weights" / f"{name}.weights.h5"),
                                  _weights(killed / "weights" / f"{name}.weights.h5")):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=n)
