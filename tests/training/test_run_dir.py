"""The run folder's lock: one training process per folder, never a stale lock."""

import os
import subprocess
import sys

import pytest

from sassnet_tf.config import load_config
from sassnet_tf.train import main
from sassnet_tf.training import run_dir
from sassnet_tf.training.run_dir import RunDir, RunDirError, in_use
from tests.training.test_train_cli import train_args

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def short_retry(monkeypatch):
    monkeypatch.setattr(run_dir, "LOCK_RETRY_SECONDS", 0.3)


def test_a_folder_in_use_is_refused_until_its_holder_lets_go(tmp_path):
    config = load_config(None, {})
    first = RunDir(tmp_path / "run")
    assert in_use(first.path) is None  # no folder, no lock file: nothing to say
    first.prepare(config, resume=False)
    assert in_use(first.path) is True
    second = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match=rf"in use by another training process \(pid {os.getpid()} on "):
        second.check(config, resume=True)
    first.release()
    assert in_use(first.path) is False
    assert second.check(config, resume=True) == config  # now it takes the folder
    assert in_use(second.path) is True
    second.release()


def test_the_lock_goes_with_its_process_however_it_ends(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sassnet_tf.training.run_dir import RunDir; "
         "RunDir(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)", str(folder)],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert in_use(str(folder)) is True
        with pytest.raises(RunDirError, match=rf"pid {holder.pid} on "):
            RunDir(folder).acquire()
    finally:
        holder.kill()  # SIGKILL: no exit handler runs
        holder.wait()
    assert in_use(str(folder)) is False
    again = RunDir(folder)
    again.acquire()
    again.release()


def test_train_refuses_to_resume_a_run_another_process_trains(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(data_root, out, "--iterations", "2")) == 0
    assert in_use(str(out)) is False  # released when training ended
    before = sorted(p.name for p in out.rglob("*")), (out / "run.json").read_text()
    busy = RunDir(out)
    busy.acquire()
    try:
        assert main(train_args(data_root, out, "--iterations", "4", "--resume")) == 2
    finally:
        busy.release()
    err = capsys.readouterr().err
    assert "in use by another training process" in err and "Traceback" not in err
    assert (sorted(p.name for p in out.rglob("*")), (out / "run.json").read_text()) == before
