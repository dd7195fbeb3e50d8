"""Atomic writes and the clean-up of temporaries that a killed writer leaves behind."""

import os
import subprocess
import sys

import pytest

from sassnet_tf.utils.atomic import atomic_dir, atomic_path, atomic_write_text, remove_stale_temporaries


def dead_pid():
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_name_their_writer():
    with atomic_path("/tmp/x/ckpt-0000002.npz", suffix=".npz") as tmp:
        name = os.path.basename(tmp)
        assert name.startswith(f".ckpt-0000002.npz.{os.getpid()}.") and name.endswith(".tmp.npz")


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = dead_pid()
    stale = [tmp_path / f".ckpt-0000002.npz.{dead}.abcd_123.tmp.npz", tmp_path / f".latest.{dead}.zz99zz99.tmp",
             tmp_path / f".vnet_last.weights.h5.{dead}.q1w2e3r4.tmp.weights.h5"]
    for path in stale:
        path.write_text("half written")
    stale_dir = tmp_path / f".3.{dead}.k9k9k9k9.tmp"
    (stale_dir / "variables").mkdir(parents=True)
    live = tmp_path / f".latest.{os.getpid()}.aaaaaaaa.tmp"  # this process is writing it right now
    live.write_text("being written")
    kept = [tmp_path / "ckpt-0000002.npz", tmp_path / "latest", tmp_path / "3", tmp_path / ".hidden_but_mine"]
    for path in kept[:2] + kept[3:]:
        path.write_text("data")
    kept[2].mkdir()
    removed = remove_stale_temporaries(str(tmp_path))
    assert sorted(removed) == sorted(str(p) for p in [*stale, stale_dir])
    assert all(not p.exists() for p in [*stale, stale_dir]) and live.exists() and all(p.exists() for p in kept)
    assert remove_stale_temporaries(str(tmp_path / "missing")) == []


def test_atomic_dir_and_text(tmp_path):
    atomic_write_text(str(tmp_path / "a.txt"), "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    with atomic_dir(str(tmp_path / "7")) as tmp:
        (open(os.path.join(tmp, "f"), "w")).close()
    assert (tmp_path / "7" / "f").is_file()
    with pytest.raises(FileExistsError):
        with atomic_dir(str(tmp_path / "7")):
            pass
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
