"""tools/case_intensity.py: per-case Dice of recorded rows, averaged over seeds, beside the case's intensity."""

import importlib.util
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("case_intensity", REPO / "tools" / "case_intensity.py")
case_intensity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(case_intensity)


def _per_case(path, dice):
    path.mkdir(parents=True)
    lines = ["case,dice,jaccard,hd95,asd,seconds"] + [f"{c},{d},0,0,0,0" for c, d in dice.items()]
    (path / "per_case.csv").write_text("\n".join(lines) + "\n")


def test_seeds_of_a_row_are_pooled_per_case(tmp_path):
    _per_case(tmp_path / "vnet_16-seed1337" / "eval-test", {"A": 0.5, "B": 0.9})
    _per_case(tmp_path / "vnet_16-seed1338" / "eval-test", {"A": 0.7, "B": 0.8})
    _per_case(tmp_path / "sassnet_16-seed1337" / "eval-test", {"A": 0.75, "B": 0.85})
    _per_case(tmp_path / "sassnet_16-seed1337" / "eval-la_eval10", {"C": 0.1})  # another evaluation: not read
    dice = case_intensity.recorded_dice(str(tmp_path), "test")
    assert dice == {"sassnet_16": {"A": [75.0], "B": [85.0]}, "vnet_16": {"A": [50.0, 70.0], "B": [90.0, 80.0]}}


def test_pearson():
    assert case_intensity.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert case_intensity.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert case_intensity.pearson([1, 2], [1, 2]) is None  # too few points
    assert case_intensity.pearson([1, 1, 1], [1, 2, 3]) is None  # no spread


def test_missing_data_root_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        case_intensity.main(["--data-root", str(tmp_path / "absent")])
    assert "not a folder" in capsys.readouterr().err
