"""tools/resolution_ceiling.py: the Dice a half-resolution row could reach if it reproduced its training target."""

import importlib.util
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("resolution_ceiling", REPO / "tools" / "resolution_ceiling.py")
resolution_ceiling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(resolution_ceiling)


def _ball(shape, radius):
    grid = np.indices(shape).astype(np.float32)
    centre = np.array([(n - 1) / 2 for n in shape], np.float32).reshape(3, 1, 1, 1)
    return (((grid - centre) ** 2).sum(0) <= radius ** 2).astype(np.uint8)


def test_factor_one_loses_nothing():
    c = resolution_ceiling.case_ceiling(_ball((20, 20, 16), 6), 1)
    assert c["target"] == pytest.approx(100.0) and c["soft"] == pytest.approx(100.0)


def test_a_large_ball_keeps_most_a_thin_slab_loses_much():
    ball = resolution_ceiling.case_ceiling(_ball((40, 40, 32), 12), 2)
    slab = np.zeros((40, 40, 32), np.uint8)
    slab[:, :, 15] = 1  # one voxel thick: at half resolution it survives on at most every other slice
    thin = resolution_ceiling.case_ceiling(slab, 2)
    assert 90.0 < ball["target"] < 100.0 and 90.0 < ball["soft"] <= 100.0
    assert thin["target"] < 80.0
    assert ball["voxels"] == int(_ball((40, 40, 32), 12).sum())


def test_a_missing_list_is_a_named_error(tmp_path, capsys):
    assert resolution_ceiling.main(["--data-root", str(tmp_path), "--list", "test.list"]) == 2
    assert "test.list: no such list file" in capsys.readouterr().err
