"""train.py end to end on a tiny LA-layout dataset: outputs, refusals, bad input, and kill + resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from sassnet_tf.config import load_config
from sassnet_tf.train import main
from tests.training.tiny_la import TINY

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train_args(data_root, output, *extra):
    return ["--data-root", data_root, "--output", str(output), "--labeled", "2", "--no-progress", *TINY, *extra]


def test_run_folder_contents(data_root, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(data_root, out, "--iterations", "4")) == 0
    state = json.loads((out / "run.json").read_text())
    assert state["status"] == "completed" and state["iteration"] == 4
    assert state["best"] and 0.0 <= state["best"]["dice"] <= 1.0
    # checkpoints at 2 and 4: the recent speed (what `la_results status` estimates from) is their intervals' median
    assert 0.0 < state["recent_seconds_per_iteration"] < state["train_seconds"]
    # which code on which machine trained which iterations
    [session] = state["sessions"]
    assert session["from_iteration"] == 0 and session["to_iteration"] == 4 and session["precision"] == state["precision"]
    assert session["code"].startswith(("git ", "sassnet_tf ")) and session["cpu"] and session["threads"] >= 1
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


def test_the_segmentation_loss_option_reaches_the_training_step(data_root, tmp_path):
    """`train.seg_loss=ce_dice` (the authors' supervised-only V-Net scripts) is what the run minimises and logs."""
    import tensorflow as tf

    out = tmp_path / "run"
    assert main(train_args(data_root, out, "--iterations", "2", "train.mode=supervised", "train.seg_loss=ce_dice",
                           "data.labeled_bs=4")) == 0
    saved = load_config(str(out / "config.yaml"))
    assert saved.train.seg_loss == "ce_dice" and saved.data.labeled_bs == 4
    logged = {}
    for path in (out / "logs").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value:
                if value.tag in ("train/loss", "train/seg_loss", "train/dice_loss"):
                    logged.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    assert logged["train/seg_loss"] == pytest.approx(logged["train/loss"])
    assert logged["train/dice_loss"] != pytest.approx(logged["train/loss"])


def test_a_resumed_run_says_running_before_its_first_checkpoint(data_root, tmp_path, monkeypatch):
    """run.json turns "running" when training resumes, not at the next checkpoint, so `la_results.py status` does not
    show a resumed full-resolution SASSNet run as stopped for its first 50 iterations."""
    from sassnet_tf.training.trainer import Trainer

    out = tmp_path / "run"
    assert main(train_args(data_root, out, "--iterations", "2")) == 0
    seen, datasets = [], Trainer._datasets

    def spy(self, start):  # called once the run is restored, before the first training iteration
        seen.append(json.loads((out / "run.json").read_text()))
        return datasets(self, start)

    monkeypatch.setattr(Trainer, "_datasets", spy)
    assert main(train_args(data_root, out, "--iterations", "3", "--resume")) == 0
    [state] = seen
    assert state["status"] == "running" and state["iteration"] == 2
    assert [s["from_iteration"] for s in state["sessions"]] == [0, 2]
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


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


def _assert_same_final_weights(a_run, b_run):
    for name in ("vnet_last", "discriminator_last"):
        a = _weights(a_run / "weights" / f"{name}.weights.h5")
        b = _weights(b_run / "weights" / f"{name}.weights.h5")
        assert a and [n for n, _ in a] == [n for n, _ in b]
        for (n, x), (_, y) in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {n}")


SIGNAL_RUN_ITERATIONS = 30


@pytest.fixture(scope="module")
def straight_run(data_root, tmp_path_factory):
    """An uninterrupted run of SIGNAL_RUN_ITERATIONS iterations, the reference for the interrupted ones."""
    out = tmp_path_factory.mktemp("straight") / "run"
    r = _run(train_args(data_root, out, "--iterations", str(SIGNAL_RUN_ITERATIONS)))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_killed_run_resumes_to_the_same_state_from_a_copied_folder(data_root, tmp_path):
    straight = tmp_path / "straight"
    killed = tmp_path / "killed"
    r = _run(train_args(data_root, straight, "--iterations", "6"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(train_args(data_root, killed, "--iterations", "6"), env={"SASSNET_TF_TEST_KILL_AT_ITERATION": "3"})
    assert r.returncode != 0  # SIGKILL after iteration 3; the newest checkpoint is iteration 2
    assert json.loads((killed / "run.json").read_text())["iteration"] == 2
    # what a kill in the middle of a write leaves (the writer's pid is gone): removed on resume, never loaded
    from tests.utils.test_atomic import dead_pid

    pid = dead_pid()
    stale = [killed / "checkpoints" / f".ckpt-0000004.npz.{pid}.abcdefgh.tmp.npz",
             killed / "checkpoints" / f".latest.{pid}.abcdefgh.tmp", killed / f".run.json.{pid}.abcdefgh.tmp",
             killed / "weights" / f".vnet_last.weights.h5.{pid}.abcdefgh.tmp.weights.h5"]
    for path in stale:
        path.write_bytes(b"half written")
    # the folder carries all a resume needs, wherever it is copied (runs/ is not in git: a new machine gets a run
    # only as a copied folder)
    moved = tmp_path / "another" / "place"
    shutil.copytree(killed, moved)
    shutil.rmtree(killed)
    r = _run(train_args(data_root, moved, "--iterations", "6", "--resume"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert not any((moved / path.relative_to(killed)).exists() for path in stale)
    sessions = json.loads((moved / "run.json").read_text())["sessions"]
    assert [(s["from_iteration"], s["to_iteration"]) for s in sessions] == [(0, 2), (2, 6)]
    _assert_same_final_weights(straight, moved)


def _start(args):
    return subprocess.Popen([sys.executable, "-m", "sassnet_tf.train", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_until_training(proc, run, timeout=300):
    """Until the run's first checkpoint exists (the loop is running); fails if the process ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended before it was signalled: {proc.communicate()[1][-2000:]}")
        try:
            if json.loads((run / "run.json").read_text()).get("iteration", 0) >= 2:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    pytest.fail("training did not reach iteration 2")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_iteration_and_resumes_to_the_same_state(sig, data_root, straight_run, tmp_path):
    """Ctrl-C (SIGINT) or SIGTERM mid-run: a checkpoint of the current iteration, run.json "interrupted", one line
    on how to resume, exit 128 + signal; --resume then ends where an uninterrupted run ends."""
    out = tmp_path / "run"
    proc = _start(train_args(data_root, out, "--iterations", str(SIGNAL_RUN_ITERATIONS)))
    _wait_until_training(proc, out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err[-2000:]
    state = json.loads((out / "run.json").read_text())
    stopped = state["iteration"]
    assert state["status"] == "interrupted" and 2 <= stopped < SIGNAL_RUN_ITERATIONS
    assert (out / "checkpoints" / f"ckpt-{stopped:07d}.npz").is_file()
    assert "Traceback" not in err
    assert (f"stopped by {signal.Signals(sig).name} after iteration {stopped} of {SIGNAL_RUN_ITERATIONS}; "
            f"checkpoint saved. Continue with: python train.py --output {out} --resume") in err
    r = _run(train_args(data_root, out, "--iterations", str(SIGNAL_RUN_ITERATIONS), "--resume"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    _assert_same_final_weights(straight_run, out)


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(data_root, tmp_path):
    out = tmp_path / "run"
    proc = _start(train_args(data_root, out, "--iterations", "400"))
    _wait_until_training(proc, out)
    proc.send_signal(signal.SIGINT)
    for line in proc.stderr:  # the first one is acknowledged ...
        if "SIGINT received: stopping after this iteration" in line:
            break
    proc.send_signal(signal.SIGINT)  # ... and the second ends the process by the signal itself
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT
    state = json.loads((out / "run.json").read_text())
    assert (out / "checkpoints" / f"ckpt-{state['iteration']:07d}.npz").is_file()
    r = _run(train_args(data_root, out, "--iterations", str(state["iteration"] + 2), "--resume"))
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_failed_start_leaves_nothing_that_blocks_the_corrected_rerun(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    # a typo in --data-root: refused before anything is written
    assert main(train_args(str(tmp_path / "no_such_root"), out, "--iterations", "2")) == 2
    assert "no_such_root" in capsys.readouterr().err and not out.exists()
    # diverging before the first checkpoint: nothing to resume, so the new folder is removed
    assert main(train_args(data_root, out, "--iterations", "4", "train.base_lr=1e30")) == 3
    err = capsys.readouterr().err
    assert "non-finite" in err and "No checkpoint was reached" in err and not out.exists()
    # the corrected rerun into the same --output
    assert main(train_args(data_root, out, "--iterations", "2")) == 0
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


def test_an_output_that_cannot_be_a_folder_is_a_clear_error(data_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(train_args(data_root, blocker / "run", "--iterations", "2")) == 2
    assert f"{blocker} is a file, not a folder" in capsys.readouterr().err
    assert main(train_args(data_root, blocker, "--iterations", "2")) == 2
    assert f"{blocker}: cannot create the run folder: {blocker} is a file" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"
