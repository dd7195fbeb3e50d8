"""tools/la_results.py: the RESULTS.md table shows only finished, evaluated runs; commands and cases are listed."""

import importlib.util
import json
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("la_results", REPO / "tools" / "la_results.py")
la_results = importlib.util.module_from_spec(spec)
sys.modules["la_results"] = la_results  # dataclasses look their module up
spec.loader.exec_module(la_results)


def _summary(dice):
    return {"paper_table": {"Dice (%)": dice, "Jaccard (%)": dice - 10, "ASD (voxel)": 2.5, "95HD (voxel)": 9.0}}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_rows_configs_exist_and_match_the_labels():
    from sassnet_tf.config import load_config

    for row in la_results.ROWS:
        config = load_config(str(REPO / row.config))
        assert config.data.labeled == row.labeled and config.data.downsample == 2
        assert config.train.mode == {"V-Net": "supervised", "V-Net + SDM": "sdm", "SASSNet": "sassnet"}[row.method]
    cases = [c for c in (REPO / la_results.EVAL_LIST).read_text().splitlines() if c and not c.startswith("#")]
    assert len(cases) == len(set(cases)) == 10


def test_table_only_reports_completed_evaluated_runs(tmp_path):
    runs = tmp_path / "runs"
    # vnet_8: finished and evaluated; sassnet_8: a shortened (smoke) run; vnet_16: still running.
    _write(runs / "vnet_8" / "run.json", {"status": "completed", "iteration": 6000, "train_seconds": 9000})
    _write(runs / "vnet_8" / "eval-la_eval10" / "summary.json", _summary(81.25))
    _write(runs / "vnet_8" / "eval-la_eval10-nms" / "summary.json", _summary(82.5))
    (runs / "vnet_8" / "eval-la_eval10" / "per_case.csv").write_text(
        "case,dice,jaccard,hd95,asd,seconds\nP1OTI3IWJUIB5NRLULLH,0.906151,0.8284,15.88,3.28,3.38\n")
    _write(runs / "sassnet_8" / "run.json", {"status": "completed", "iteration": 4})
    _write(runs / "sassnet_8" / "eval-la_eval10" / "summary.json", _summary(22.0))
    _write(runs / "vnet_16" / "run.json", {"status": "running", "iteration": 1200, "train_seconds": 3600})
    text = la_results.results_markdown(str(runs), "runs/la_half")
    lines = {line.split(" | ")[0] + line.split(" | ")[1]: line for line in text.splitlines() if "| 1337 |" in line}  # the main table (seed column)
    assert "| 81.25 | 71.25 | 2.50 | 9.00 | 79.99" in lines["| V-Net8"] and "done, 2.5 h training" in lines["| V-Net8"]
    assert "22.00" not in text and "iteration 4 of 6000" in lines["| SASSNet8"]
    assert "running: iteration 1200 of 6000, 1.0 h so far" in lines["| V-Net16"]
    assert "not started" in lines["| SASSNet16"]
    assert "| 82.50 | 72.50 |" in text  # the +NMS table
    assert "| case | V-Net (8) |" in text and "| `P1OTI3IWJUIB5NRLULLH` | 90.62 |" in text  # per case, finished rows
    assert "| `UZUZZT2W9IUSHL6ASOX3` | – |" in text
    assert "python tools/la_results.py run sassnet_16" in text and "UZUZZT2W9IUSHL6ASOX3" in text
    assert "--list test.list --nms --output runs/la_half/<row>/eval-test-nms" in text  # the official split, by the user


def test_unknown_row_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        la_results.main(["run", "sassnet_32"])
    assert exc.value.code == 2 and "unknown row(s) sassnet_32" in capsys.readouterr().err


def test_run_rows_with_two_jobs_runs_every_row_on_shared_cores(tmp_path, monkeypatch):
    import threading

    calls, lock = [], threading.Lock()
    both_trainings_running = threading.Barrier(2, timeout=30)  # broken (an error) unless two lanes meet here

    def fake_call(argv, cwd, stdout=None, stderr=None):
        with lock:
            calls.append(argv)
            first_trainings = sum(a[1] == "train.py" for a in calls) <= 2
        if argv[1] == "train.py" and first_trainings:
            both_trainings_running.wait()
        stdout.write("step output\n")
        return 0

    monkeypatch.setattr(la_results.subprocess, "call", fake_call)
    monkeypatch.setattr(la_results.os, "cpu_count", lambda: 2)
    rows = [la_results.ROW_BY_KEY[k] for k in ("sassnet_8", "vnet_sdm_8", "vnet_16")]
    runs = str(tmp_path / "runs")
    assert la_results.run_rows(rows, runs, "data/LA", [], jobs=2) == 0
    assert len(calls) == 9  # train + 2 evaluations per row; the first two trainings ran at the same time
    assert all(argv[-2:] == ["--threads", "1"] for argv in calls)
    trainings = [argv[3] for argv in calls if argv[1] == "train.py"]
    assert set(trainings[:2]) == {rows[0].config, rows[1].config} and trainings[2] == rows[2].config  # in order
    for row in rows:
        assert (tmp_path / "runs" / f"{row.key}.log").read_text().count("step output") == 3


def test_run_rows_reports_a_failed_row_and_keeps_the_other_lane_going(tmp_path, monkeypatch):
    def fake_call(argv, cwd, stdout=None, stderr=None):
        return 3 if "vnet_sdm_8" in " ".join(argv) else 0

    monkeypatch.setattr(la_results.subprocess, "call", fake_call)
    rows = [la_results.ROW_BY_KEY[k] for k in ("vnet_sdm_8", "vnet_16")]
    assert la_results.run_rows(rows, str(tmp_path / "runs"), "data/LA", [], jobs=2) == 3
    assert (tmp_path / "runs" / "vnet_16.log").exists()
