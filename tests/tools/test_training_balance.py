"""tools/training_balance.py: block means of a recorded run's training scalars, and the adversarial term's share."""

import importlib.util
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("training_balance", REPO / "tools" / "training_balance.py")
training_balance = importlib.util.module_from_spec(spec)
spec.loader.exec_module(training_balance)


def _scalars(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["tag,step,value"] + [f"train/{tag},{step},{value}" for tag, step, value in rows]
    path.write_text("\n".join(lines) + "\n")


def _run(path, adv_of_step):
    rows = []
    for step in (10, 20, 30, 40):
        rows += [("loss", step, 1.0), ("adv_loss", step, adv_of_step(step)), ("consistency_weight", step, 0.5),
                 ("d_accuracy", step, step / 100), ("dice_loss", step, 0.2)]
    _scalars(path, rows + [("lr", 10, 0.01)])


def test_block_means_and_the_weighted_adversarial_term(tmp_path):
    _run(tmp_path / "sassnet_8-seed1337" / "scalars.csv", lambda step: step / 10)
    _run(tmp_path / "sassnet_8-seed1338" / "scalars.csv", lambda step: 1.0)
    _run(tmp_path / "sassnet_80-seed1337" / "scalars.csv", lambda step: 1.0)  # another row: not read
    result = training_balance.analyse(str(tmp_path), ["sassnet_8"], block=20)
    assert sorted(result) == ["sassnet_8-seed1337", "sassnet_8-seed1338"]
    first, second = result["sassnet_8-seed1337"]
    assert first["iterations"] == "1-20" and second["iterations"] == "21-40"
    assert first["adv_loss"] == pytest.approx(1.5) and second["adv_loss"] == pytest.approx(3.5)
    assert second["weighted_adv"] == pytest.approx(0.5 * 3.5) and second["d_accuracy"] == pytest.approx(0.35)
    assert first["sdm_loss"] is None  # a term the run did not log


def test_missing_records_are_a_named_error(tmp_path, capsys):
    assert training_balance.main(["--records", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert training_balance.main(["--records", str(tmp_path)]) == 2
    assert "no scalars.csv of rows sassnet_8, sassnet_16" in capsys.readouterr().err
