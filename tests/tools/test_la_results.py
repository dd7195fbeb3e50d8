"""tools/la_results.py: the RESULTS.md table shows only finished, evaluated runs; commands and cases are listed."""

import importlib.util
import json
import os
import pathlib
import statistics
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

    modes = {"V-Net": "supervised", "V-Net (all labeled)": "supervised", "V-Net + SDM": "sdm", "SASSNet": "sassnet"}
    for row in la_results.ROWS:
        for path, downsample, patch in ((row.config, 2, (64, 64, 48)), (row.full_config, 1, (112, 112, 80))):
            if path is None:
                continue
            config = load_config(str(REPO / path))
            assert config.data.labeled == row.labeled and config.data.downsample == downsample, path
            assert config.data.patch_size == patch and config.train.iterations == 6000, path
            assert config.train.mode == modes[row.method], path
            assert config.data.unlabeled_bs == (2 if row.unlabeled else 0), path
    assert [row.key for row in la_results.PROTOCOLS["half"].rows] == ["vnet_8", "vnet_sdm_8", "sassnet_8", "vnet_16",
                                                                    "sassnet_16"]
    assert [row.key for row in la_results.PROTOCOLS["full"].rows][-1] == "vnet_80"


def test_the_full_protocol_trains_the_paper_s_configs_and_checkpoints_often():
    full = la_results.PROTOCOLS["full"]
    config = la_results.row_config(la_results.ROW_BY_KEY["sassnet_8"], full, 1337)
    assert config.data.patch_size == (112, 112, 80) and config.data.downsample == 1
    assert config.train.consistency == 0.015 and config.train.checkpoint_every == 50 and config.train.seed == 1337
    # official's seeds, 1337 first: issue 20's one-seed table fills before any row gets a spread
    assert full.seeds == la_results.PROTOCOLS["official"].seeds and full.seeds[0] == 1337
    train = la_results.row_commands(la_results.ROW_BY_KEY["vnet_80"], full, seed=1337)[0]
    assert "--config configs/la_vnet_80labeled.yaml" in train and "--output runs/la_full/vnet_80-seed1337" in train
    with pytest.raises(SystemExit):
        la_results.main(["run", "vnet_80", "--protocol", "half", "--data-root", "."])
    cases = [c for c in (REPO / la_results.EVAL_LIST).read_text().splitlines() if c and not c.startswith("#")]
    assert len(cases) == len(set(cases)) == 10


def test_protocols_differ_only_in_schedule_and_print_quoted_commands():
    half, short = la_results.PROTOCOLS["half"], la_results.PROTOCOLS["short"]
    for row in half.rows:
        a, b = la_results.row_config(row, half).to_dict(), la_results.row_config(row, short).to_dict()
        assert (a["train"]["iterations"], b["train"]["iterations"]) == (6000, 1200)
        assert (list(a["train"]["lr_decay_steps"]), list(b["train"]["lr_decay_steps"])) == ([2500, 5000], [500, 1000])
        assert (a["train"]["rampup_interval"], b["train"]["rampup_interval"]) == (150, 30)
        for key in ("iterations", "lr_decay_steps", "rampup_interval"):
            a["train"].pop(key), b["train"].pop(key)
        assert a == b
    train = la_results.row_commands(la_results.ROW_BY_KEY["sassnet_8"], short)[0]
    assert "--output runs/la_short/sassnet_8" in train and "--set 'train.lr_decay_steps=[500,1000]'" in train


def _finished_run(folder, row, protocol, dice, **overrides):
    """A run folder as train.py + evaluate leave it (config, run.json, both evaluations), without weights."""
    from sassnet_tf.config import save_config

    config = la_results.row_config(row, protocol).replace(**{"data.root": "/elsewhere/LA", **overrides})
    folder.mkdir(parents=True)
    save_config(config, str(folder / "config.yaml"))
    _write(folder / "run.json", {"status": "completed", "iteration": config.train.iterations, "train_seconds": 9000,
                                 "precision": "mixed_bfloat16"})
    _write(folder / "eval-la_eval10" / "summary.json", _summary(dice))
    _write(folder / "eval-la_eval10-nms" / "summary.json", _summary(dice + 1.25))
    for name in la_results.EVAL_DIRS:
        (folder / name / "per_case.csv").write_text(
            f"case,dice,jaccard,hd95,asd,seconds\nP1OTI3IWJUIB5NRLULLH,{dice / 100},0.8284,15.88,3.28,3.38\n")


def test_only_runs_of_the_protocols_exact_config_are_recorded(tmp_path):
    short = la_results.PROTOCOLS["short"]
    vnet8, vnet16 = la_results.ROW_BY_KEY["vnet_8"], la_results.ROW_BY_KEY["vnet_16"]
    runs, records = tmp_path / "runs", tmp_path / "records"
    _finished_run(runs / "vnet_8", vnet8, short, 81.25)  # another data root only: counts
    _finished_run(runs / "vnet_16", vnet16, short, 99.0, **{"train.base_lr": "0.1"})  # an extra override: never
    assert la_results.record_finished(short, str(runs), str(records)) == ["vnet_8"]
    record = records / "vnet_8"
    for name in la_results.record_files():
        assert (record / name).read_bytes() == (runs / "vnet_8" / name).read_bytes()
    assert not (record / la_results.SCALARS).exists()  # no TensorBoard logs, no scalars
    assert not (records / "vnet_16").exists()


def test_record_keeps_the_training_scalars_as_csv(tmp_path):
    import tensorflow as tf

    row, protocol = la_results.ROW_BY_KEY["vnet_8"], la_results.PROTOCOLS["short"]
    run = tmp_path / "run"
    _finished_run(run, row, protocol, 80.0)
    with tf.summary.create_file_writer(str(run / "logs")).as_default():
        for step, loss in ((10, 0.9), (20, 0.5)):
            tf.summary.scalar("train/loss", loss, step=step)
            tf.summary.scalar("train/d_accuracy", 0.75, step=step)
            tf.summary.scalar("train/other", 1.0, step=step)  # not a recorded tag: not kept
    la_results.record_row(str(run), str(tmp_path / "record"))
    scalars = la_results.read_record_scalars(str(tmp_path / "record"))
    assert scalars["train/loss"] == [(10, 0.9), (20, 0.5)] and scalars["train/d_loss"] == []
    assert scalars["train/d_accuracy"] == [(10, 0.75), (20, 0.75)] and "train/other" not in scalars


def test_table_reports_only_recorded_rows_and_shows_the_progress_of_the_others(tmp_path):
    half, short = la_results.PROTOCOLS["half"], la_results.PROTOCOLS["short"]
    records, runs = tmp_path / "records", tmp_path / "runs"
    _finished_run(records / "la_half" / "vnet_8", la_results.ROW_BY_KEY["vnet_8"], half, 81.25)
    _finished_run(records / "la_short" / "sassnet_8", la_results.ROW_BY_KEY["sassnet_8"], short, 77.5)
    # runs: a smoke run that finished and was evaluated (never numbers), a running row, a finished unrecorded one
    _write(runs / "la_half" / "sassnet_8" / "run.json", {"status": "completed", "iteration": 4})
    _write(runs / "la_half" / "sassnet_8" / "eval-la_eval10" / "summary.json", _summary(22.0))
    _write(runs / "la_half" / "vnet_16" / "run.json", {"status": "running", "iteration": 1200, "train_seconds": 3600})
    _finished_run(runs / "la_short" / "vnet_8", la_results.ROW_BY_KEY["vnet_8"], short, 66.0)
    text = la_results.results_markdown(str(records), str(runs))
    half_text, short_text = text.split("## LA half resolution, 1/5 schedule (`")
    short_text = short_text.split("## Commands")[0]

    def main_rows(section):  # "| Method | Labeled ..." lines of the main table (the seed column)
        return {" ".join(line.split(" | ")[:2]): line for line in section.splitlines() if "| 1337 |" in line}

    h, s = main_rows(half_text), main_rows(short_text)
    assert "| 81.25 | 71.25 | 2.50 | 9.00 | 81.25 | 79.99" in h["| V-Net 8"]  # mean, then median of the per-case Dice
    assert "| 1337 | mixed_bfloat16 | done, 2.5 h training |" in h["| V-Net 8"]
    assert "22.00" not in text and "iteration 4 of 6000" in h["| SASSNet 8"]
    assert "running: iteration 1200 of 6000, 1.0 h so far" in h["| V-Net 16"] and "not started" in h["| SASSNet 16"]
    assert "| 82.50 | 72.50 |" in half_text  # the +NMS table
    assert "| 77.50 | 67.50 |" in s["| SASSNet 8"] and "iteration 1200 of 1200" in s["| V-Net 8"]
    assert "66.00" not in text  # finished but not recorded: `table` records it first, the renderer never reads runs
    assert "| case | V-Net (8), half | SASSNet (8), short |" in text
    assert "| `P1OTI3IWJUIB5NRLULLH` | 81.25 | 77.50 |" in text and "| `UZUZZT2W9IUSHL6ASOX3` | – | – |" in text
    assert "python tools/la_results.py run sassnet_16 --protocol short" in text and "UZUZZT2W9IUSHL6ASOX3" in text
    assert ("--list test.list --no-png --output runs/la_official/vnet_8-seed1337/eval-test --nms-output "
            "runs/la_official/vnet_8-seed1337/eval-test-nms") in text  # one inference scored both ways


def _finished_seed(folder, row, seed, dice, dev_dice=50.0):
    """A finished official-protocol run folder or record: test.list and development evaluations."""
    official = la_results.PROTOCOLS["official"]
    _finished_run(folder, row, official, dev_dice, **{"train.seed": seed})
    for name, value in (("eval-test", dice), ("eval-test-nms", dice + 1.0)):
        _write(folder / name / "summary.json", _summary(value))
        (folder / name / "per_case.csv").write_text(f"case,dice\nA,{value / 100}\nB,{value / 100}\n")


def test_official_table_gives_seed_means_and_compares_against_the_spread(tmp_path):
    official = la_results.PROTOCOLS["official"]
    records, runs = tmp_path / "records" / "la_official", tmp_path / "runs" / "la_official"
    vnet16, sassnet16 = la_results.ROW_BY_KEY["vnet_16"], la_results.ROW_BY_KEY["sassnet_16"]
    for seed, dice in ((1337, 80.0), (1338, 84.0)):
        _finished_seed(records / f"vnet_16-seed{seed}", vnet16, seed, dice)
    for seed, dice in ((1337, 88.0), (1338, 89.0), (1339, 90.0)):
        _finished_seed(records / f"sassnet_16-seed{seed}", sassnet16, seed, dice)
    _write(runs / "vnet_16-seed1339" / "run.json", {"status": "running", "iteration": 300, "train_seconds": 360})
    # a finished V-Net (8) run trained with another seed than its folder says is never recorded
    _finished_seed(runs / "vnet_8-seed1337", la_results.ROW_BY_KEY["vnet_8"], 1338, 66.6)
    assert la_results.record_finished(official, str(runs), str(records)) == []
    lines = la_results.seeds_section(official, str(records), str(runs))
    text = "\n".join(lines)
    test_table = text.split("### `test`\n")[1].split("###")[0]
    assert "| V-Net | 16 | 0 | 2 | 82.00 ± 2.83 | 72.00 ± 2.83 | 2.50 ± 0.00 | 9.00 ± 0.00 | 86.03 |" in test_table
    assert "| SASSNet | 16 | 64 | 3 | 89.00 ± 1.00 | 79.00 ± 1.00 |" in test_table
    # +7.00 points; standard error sqrt(8 / 2 + 1 / 3) = 2.08: exceeds two of them
    assert "SASSNet vs V-Net, 16 labeled: mean Dice +7.00 points (standard error 2.08 from the seeds; exceeds" in text
    # case by case over the seeds both rows finished (1337, 1338): SASSNet's 88.5 against V-Net's 82.0 on A and B
    assert ("exceeds two standard errors). Paired by seed (2 seeds, each case's Dice averaged over them): better on "
            "2 of 2 cases; without the case that moved most +6.50 (`A` +6.5).") in text
    assert "SASSNet vs V-Net, 8 labeled: not both finished yet." in text
    nms_table = text.split("### `test`, largest connected component kept")[1].split("###")[0]
    assert "| V-Net | 16 | 0 | 2 | 83.00 ± 2.83 |" in nms_table
    dev_table = text.split("### `la_eval10`\n")[1].split("###")[0]
    assert "| SASSNet | 16 | 64 | 3 | 50.00 ± 0.00 |" in dev_table
    seeds = text.split("### Every seed")[1]
    # 360 s for 300 iterations: 5700 more take 1.9 h at that speed
    assert ("| V-Net (16) | 1339 | – | – | – | – | – | – | – | running: iteration 300 of 6000, "
            "0.1 h so far, ~1.9 h more at its speed so far |") in seeds
    assert "| SASSNet (16) | 1338 | 89.00 | 79.00 | 2.50 | 9.00 | 89.00 | 90.00 | mixed_bfloat16 | done" in seeds
    assert ("| V-Net (8) | 1337 | – |" in seeds and "66.60" not in text
            and "completed: iteration 6000 of 6000" in seeds)
    assert la_results.exceeds_seed_spread([80.0, 84.0], [79.0, 85.0])[2] is False


def test_official_runs_train_each_seed_in_its_own_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(la_results.subprocess, "call",
                        lambda argv, cwd, stdout=None, stderr=None: calls.append(argv) or 0)
    rows = [la_results.ROW_BY_KEY[k] for k in ("vnet_16", "sassnet_16")]
    runs = str(tmp_path / "runs")
    assert la_results.run_rows(rows, la_results.PROTOCOLS["official"], runs, "data/LA", [], seeds=[1338, 1339]) == 0
    trainings = [argv for argv in calls if argv[1] == "train.py"]
    outputs = [argv[argv.index("--output") + 1] for argv in trainings]
    assert outputs == [f"{runs}/{key}-seed{seed}" for seed in (1338, 1339) for key in ("vnet_16", "sassnet_16")]
    assert all(f"train.seed={out[-4:]}" in argv for argv, out in zip(trainings, outputs))
    evaluations = [argv[argv.index("--list") + 1] for argv in calls if argv[1] == "-m"]
    assert evaluations[:2] == ["test.list", la_results.EVAL_LIST]  # each pass writes both the plain and NMS result
    with pytest.raises(SystemExit):
        la_results.main(["run", "vnet_16", "--protocol", "half", "--seeds", "1338", "--data-root", "."])


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
    assert la_results.run_rows(rows, la_results.PROTOCOLS["half"], runs, "data/LA", [], jobs=2) == 0
    assert len(calls) == 6  # train + 1 evaluation pass per row; the first two trainings ran at the same time
    assert all(argv[-2:] == ["--threads", "1"] for argv in calls)
    trainings = [argv[3] for argv in calls if argv[1] == "train.py"]
    assert set(trainings[:2]) == {rows[0].config, rows[1].config} and trainings[2] == rows[2].config  # in order
    for row in rows:
        assert (tmp_path / "runs" / f"{row.key}.log").read_text().count("step output") == 2


def test_run_rows_reports_a_failed_row_and_keeps_the_other_lane_going(tmp_path, monkeypatch):
    def fake_call(argv, cwd, stdout=None, stderr=None):
        return 3 if "vnet_sdm_8" in " ".join(argv) else 0

    monkeypatch.setattr(la_results.subprocess, "call", fake_call)
    rows = [la_results.ROW_BY_KEY[k] for k in ("vnet_sdm_8", "vnet_16")]
    assert la_results.run_rows(rows, la_results.PROTOCOLS["half"], str(tmp_path / "runs"), "data/LA", [], jobs=2) == 3
    assert (tmp_path / "runs" / "vnet_16.log").exists()


def test_median_dice_resists_one_failed_case(tmp_path):
    folder = tmp_path / "eval"
    folder.mkdir()
    cases = [("A", 0.86), ("B", 0.84), ("C", 0.0), ("D", 0.88)]  # even count: mean of the middle two
    (folder / "per_case.csv").write_text("case,dice\n" + "".join(f"{c},{d}\n" for c, d in cases))
    assert la_results.median_dice(str(folder)) == "85.00"
    (folder / "per_case.csv").write_text("case,dice\nA,0.5\nB,0.0\nC,0.7\n")  # odd count: the middle one
    assert la_results.median_dice(str(folder)) == "50.00"
    assert la_results.median_dice(str(tmp_path / "missing")) == "–"


def test_distance_means_say_when_they_leave_out_a_case_with_an_empty_prediction():
    summary = _summary(75.0)
    assert la_results._metrics(summary) == "| 75.00 | 65.00 | 2.50 | 9.00 "  # older records: no counts, no mark
    summary["metrics"] = {"cases": 10, "asd": {"n": 9, "n_undefined": 1}, "hd95": {"n": 9, "n_undefined": 1}}
    assert la_results._metrics(summary) == "| 75.00 | 65.00 | 2.50 (9/10 cases) | 9.00 (9/10 cases) "
    summary["metrics"]["asd"] = summary["metrics"]["hd95"] = {"n": 10, "n_undefined": 0}
    assert la_results._metrics(summary) == "| 75.00 | 65.00 | 2.50 | 9.00 "


@pytest.mark.parametrize("key, rows, section, field, values", [
    # issue 21: the D step reusing the network step's forward pass, on the SASSNet rows only
    ("official_d_reuse", ["sassnet_8", "sassnet_16"], "train", "d_reuse_forward", (True, False)),
    # issue 19 point 4: the 16-label adversarial weight for the 8-label SASSNet row
    ("official_w010", ["sassnet_8"], "train", "consistency", (0.01, 0.015)),
    # issue 19 point 4: intensity augmentation
    ("official_intensity", ["vnet_16", "sassnet_16"], "data", "intensity_scale", ((0.34, 1.8), (1.0, 1.0))),
    # issue 19 point 4: bf16 numerics
    ("official_float32", ["vnet_8", "sassnet_8"], "train", "precision", ("float32", "auto")),
])
def test_an_ablation_changes_one_setting_of_its_rows_and_keeps_official_s_seeds(key, rows, section, field, values):
    ablation, official = la_results.PROTOCOLS[key], la_results.PROTOCOLS["official"]
    assert [row.key for row in ablation.rows] == rows
    assert ablation.seeds == official.seeds and ablation.evaluations == official.evaluations
    for row in ablation.rows:
        for seed in ablation.seeds:
            config = la_results.row_config(row, ablation, seed).to_dict()
            reference = la_results.row_config(row, official, seed).to_dict()
            changed = tuple(v if not isinstance(v, list) else tuple(v)
                            for v in (config[section].pop(field), reference[section].pop(field)))
            assert changed == values and [type(v) for v in changed] == [type(v) for v in values]
            assert config == reference  # the same run otherwise: each pairs with official's


@pytest.mark.parametrize("key, row_keys, changed", [
    # `full` V-Net (16) and (80) with 4 labeled patches and (CE + Dice) / 2, as UA-MT's supervised-only script trains it
    ("full_uamt", ["vnet_16", "vnet_80"], {("data", "labeled_bs"): (4, 2), ("train", "seg_loss"): ("ce_dice", "dice")}),
    # `full` V-Net + SDM (8) in float32: does bf16 cost it at full resolution?
    ("full_float32", ["vnet_sdm_8"], {("train", "precision"): ("float32", "auto")}),
    # `full` SASSNet (16) with the 8-label adversarial weight: does a stronger pull find the dark scans?
    ("full_w015", ["sassnet_16"], {("train", "consistency"): (0.015, 0.01)}),
])
def test_a_full_resolution_ablation_changes_only_its_settings_and_pairs_with_full(key, row_keys, changed):
    """Issue 20 point 4: each `full_*` ablation is `full`'s rows with its settings on top, nothing else."""
    ablation, full = la_results.PROTOCOLS[key], la_results.PROTOCOLS["full"]
    assert [row.key for row in ablation.rows] == row_keys
    assert ablation.paired_with == "full" and ablation.half_resolution_twin is None and ablation.full_resolution
    assert ablation.seeds == full.seeds and ablation.evaluations == full.evaluations
    for row in ablation.rows:
        _assert_only_changed(row, ablation, full, changed)
    assert ablation.folder == f"la_{key}"


def _assert_only_changed(row, ablation, full, changed):
    config = la_results.row_config(row, ablation, 1337).to_dict()
    reference = la_results.row_config(row, full, 1337).to_dict()
    for (section, name), values in changed.items():
        assert (config[section].pop(name), reference[section].pop(name)) == values
    assert config == reference and config["train"]["checkpoint_every"] == 50  # full's settings otherwise


def test_an_ablation_refuses_a_row_it_does_not_train():
    with pytest.raises(SystemExit):
        la_results.main(["run", "vnet_16", "--protocol", "official_d_reuse"])


def test_an_ablation_shows_each_run_beside_official_s_run_of_the_same_row_and_seed(tmp_path):
    ablation = la_results.PROTOCOLS["official_float32"]
    assert ablation.paired_with == "official" and la_results.PROTOCOLS["official"].paired_with is None
    records = tmp_path / "records"
    for seed, dice in ((1337, 76.0), (1338, 77.0), (1339, 70.0)):
        summary = records / "la_official" / f"sassnet_8-seed{seed}" / "eval-test" / "summary.json"
        _write(summary, _summary(dice))
    for seed, dice in ((1337, 79.0), (1338, 79.0)):  # seed 1339 of the ablation not finished: no pair
        _write(records / "la_official_float32" / f"sassnet_8-seed{seed}" / "eval-test" / "summary.json", _summary(dice))
    _write(records / "la_official_float32" / "vnet_8-seed1337" / "eval-test" / "summary.json", _summary(75.0))
    text = "\n".join(la_results.paired_section(ablation, str(records / "la_official_float32"), "eval-test"))
    assert ("| SASSNet (8) | 1337 | 79.00 | 76.00 | +3.00 | – | – |" in text  # no per-case files: no case cells
            and "| SASSNet (8) | 1338 | 79.00 | 77.00 | +2.00 | – | – |" in text)
    assert "1339" not in text
    # differences +3 and +2: mean +2.50, standard error stdev(3, 2) / sqrt(2) = 0.50
    assert "SASSNet (8): mean difference +2.50 points over 2 pairs (standard error 0.50)." in text
    assert "V-Net (8): no finished pair yet." in text  # official's V-Net (8) record is absent here


def test_a_pair_says_on_how_many_cases_it_is_better_and_what_remains_without_the_case_that_moved_most(tmp_path):
    ablation = la_results.PROTOCOLS["official_intensity"]
    records = tmp_path / "records"
    cases = {"dark": (80.0, 1.0), "a": (85.0, 86.0), "b": (84.0, 85.0), "c": (90.0, 88.0)}
    for folder, side in (("la_official_intensity", 0), ("la_official", 1)):
        evaluation = records / folder / "vnet_16-seed1337" / "eval-test"
        _write(evaluation / "summary.json", _summary(statistics.mean(dice[side] for dice in cases.values())))
        (evaluation / "per_case.csv").write_text(
            "case,dice\n" + "".join(f"{case},{dice[side] / 100}\n" for case, dice in cases.items()))
    text = "\n".join(la_results.paired_section(ablation, str(records / "la_official_intensity"), "eval-test"))
    # better on dark and c; without the dark scan (+79) the other three move -1, -1, +2: mean +0.00
    assert "| V-Net (16) | 1337 | 84.75 | 65.00 | +19.75 | 2 of 4 | +0.00 (`dark` +79.0) |" in text


def test_the_full_table_sets_each_row_beside_the_paper_and_its_half_resolution_seeds(tmp_path):
    full = la_results.PROTOCOLS["full"]
    assert full.half_resolution_twin == "official" and la_results.PROTOCOLS["official"].half_resolution_twin is None
    records, runs = tmp_path / "records", tmp_path / "runs"
    for key, dice in (("vnet_8", 79.0), ("vnet_16", 80.03), ("vnet_80", 95.0)):
        row = la_results.ROW_BY_KEY[key]
        folder = records / "la_full" / f"{key}-seed1337"
        _finished_run(folder, row, full, 50.0, **{"train.seed": 1337})
        _write(folder / "eval-test" / "summary.json", _summary(dice))
    for seed, dice in ((1337, 80.0), (1338, 84.0)):  # the half-resolution V-Net (16), two seeds
        _write(records / "la_official" / f"vnet_16-seed{seed}" / "eval-test" / "summary.json", _summary(dice))
    text = "\n".join(la_results.seeds_section(full, str(records / "la_full"), str(runs / "la_full")))
    gaps = text.split("Against the paper's Dice:")[1].split("###")[0]
    assert "- V-Net (8): 79.00 against the paper's 79.99 (-0.99 points): within 1.5 points." in gaps
    assert ("- V-Net (16): 80.03 against the paper's 86.03 (-6.00 points): more than 1.5 points; at half resolution "
            "on the same split (`--protocol official`) 82.00 ± 2.83 over 2 seeds.") in gaps
    assert ("- V-Net (all labeled) (80): 95.00 against the paper's 91.14 (+3.86 points): more than 1.5 points; no "
            "half-resolution run of this row on the same split") in gaps
    assert "SASSNet (8)" not in gaps  # unfinished rows are not compared
    official = "\n".join(la_results.seeds_section(la_results.PROTOCOLS["official"], str(records / "la_official"),
                                                  str(runs / "la_official")))
    assert "Against the paper's Dice" not in official


def _full_section(tmp_path, keys, test_dice, test_nms_dice):
    """The `full` protocol's Markdown with `keys`' seed-1337 runs finished and scored on test.list."""
    full = la_results.PROTOCOLS["full"]
    records, runs = tmp_path / "records", tmp_path / "runs"
    for key in keys:
        folder = records / "la_full" / f"{key}-seed1337"
        _finished_run(folder, la_results.ROW_BY_KEY[key], full, 50.0, **{"train.seed": 1337})
        _write(folder / "eval-test" / "summary.json", _summary(test_dice))
        _write(folder / "eval-test-nms" / "summary.json", _summary(test_nms_dice))
    return "\n".join(la_results.seeds_section(full, str(records / "la_full"), str(runs / "la_full")))


def test_the_largest_component_table_shows_the_paper_s_numbers_with_it_where_it_gives_them(tmp_path):
    """Issue 20 point 1: each row with and without the largest component beside the paper's rows (REFERENCE.md gives
    the paper's +NMS numbers for SASSNet only)."""
    text = _full_section(tmp_path, ("vnet_16", "sassnet_16"), 85.0, 86.0)
    plain = text.split("### `test`\n")[1].split("###")[0]
    nms = text.split("### `test`, largest connected component kept")[1].split("###")[0]
    assert "| SASSNet | 16 | 64 | 1 | 85.00 | 75.00 | 2.50 | 9.00 | 89.27 | 80.82 | 3.13 | 8.83 |" in plain
    assert "| SASSNet | 16 | 64 | 1 | 86.00 | 76.00 | 2.50 | 9.00 | 89.54 | 81.24 | 2.20 | 8.24 |" in nms
    assert "| V-Net | 16 | 0 | 1 | 86.00 | 76.00 | 2.50 | 9.00 | – | – | – | – |" in nms
    dev_nms = text.split("### `la_eval10`, largest connected component kept")[1].split("###")[0]
    assert "paper" not in dev_nms  # the paper's numbers are on test.list only


def test_the_development_table_marks_the_row_that_trained_on_those_cases_labels(tmp_path):
    text = _full_section(tmp_path, ("vnet_8", "vnet_80"), 80.0, 80.0)
    test_table = text.split("### `test`\n")[1].split("###")[0]
    dev_table = text.split("### `la_eval10`\n")[1].split("###")[0]
    assert "| V-Net (all labeled) | 80 |" in test_table and "†" not in test_table
    assert "| V-Net (all labeled) † | 80 |" in dev_table and "| V-Net | 8 |" in dev_table
    assert "† trained on these 10 cases' labels" in dev_table
    assert [row.key for row in la_results.ROWS if la_results.trains_on_eval_list(row)] == ["vnet_80"]


@pytest.mark.real_data
def test_the_development_list_is_the_last_ten_cases_of_the_real_train_list(la_root):
    from sassnet_tf.data.dataset_layout import open_dataset

    layout = open_dataset(str(la_root))
    train = layout.read_list("train.list")
    assert len(train) == la_results.TRAIN_CASES
    assert layout.read_list(str(REPO / la_results.EVAL_LIST)) == train[-la_results.EVAL_CASES:]


def test_status_tells_a_run_in_training_from_one_whose_process_ended(tmp_path):
    from sassnet_tf.training.run_dir import RunDir

    folder = tmp_path / "vnet_16"
    _write(folder / "run.json", {"status": "running", "iteration": 1200, "train_seconds": 3600})
    # a run from before the folder lock: run.json is all there is to go by
    assert la_results._status(la_results.row_state(str(folder)), 6000).startswith("running: iteration 1200")
    run = RunDir(folder)
    run.acquire()
    try:
        assert la_results._status(la_results.row_state(str(folder)), 6000).startswith("running: iteration 1200")
    finally:
        run.release()  # as the kernel does when the process is killed: run.json still says "running"
    assert la_results._status(la_results.row_state(str(folder)), 6000).startswith(
        "stopped (no process trains it; the same command resumes it): iteration 1200 of 6000")
    # resumed: the process holds the lock while run.json still says how the last session ended
    _write(folder / "run.json", {"status": "interrupted", "iteration": 1200, "train_seconds": 3600})
    assert la_results._status(la_results.row_state(str(folder)), 6000).startswith("interrupted: iteration 1200")
    run.acquire()
    try:
        assert la_results._status(la_results.row_state(str(folder)), 6000).startswith("running: iteration 1200")
    finally:
        run.release()


def test_status_estimates_the_rest_from_the_recent_speed_when_the_run_records_it(tmp_path):
    folder = tmp_path / "vnet_16"
    # 3600 s for 1200 iterations includes a long pause; the last checkpoint intervals ran at 1.2 s per iteration
    _write(folder / "run.json", {"status": "running", "iteration": 1200, "train_seconds": 3600,
                                 "recent_seconds_per_iteration": 1.2})
    text = la_results._status(la_results.row_state(str(folder)), 6000)
    assert text.endswith("1.0 h so far, ~1.6 h more at its recent 1.20 s per iteration"), text


def test_a_recorded_run_gets_its_case_errors_when_its_predictions_are_there(tmp_path, monkeypatch):
    import nibabel as nib
    import numpy as np

    from tests.training.tiny_la import write_tiny_la

    root = write_tiny_la(tmp_path / "la")  # test.list: CASE04, CASE05
    monkeypatch.setattr(la_results, "RECORDS", str(tmp_path / "records"))  # absolute: not the repository's
    monkeypatch.setattr(la_results.subprocess, "call", lambda argv, **kw: 0)  # training and evaluation "done"
    row, official = la_results.ROW_BY_KEY["vnet_8"], la_results.PROTOCOLS["official"]
    run = tmp_path / "runs" / "vnet_8-seed1337"
    _finished_seed(run, row, 1337, 80.0)
    (run / "weights").mkdir()
    (run / "weights" / "vnet_last.weights.h5").write_bytes(b"")
    os.utime(run / "weights" / "vnet_last.weights.h5", (0, 0))  # older than the evaluations: they are kept
    (run / "eval-test" / "per_case.csv").write_text("case,dice\nCASE04,0.9\nCASE05,0.8\n")
    (run / "eval-test" / "predictions").mkdir()
    for case in ("CASE04", "CASE05"):
        empty = np.zeros((40, 36, 20), np.uint8)  # nothing predicted: every atrium voxel missed
        nib.save(nib.Nifti1Image(empty, np.eye(4)), str(run / "eval-test" / "predictions" / f"{case}.nii.gz"))
    assert la_results.run_row(row, official, str(tmp_path / "runs"), root, [], seed=1337) == 0
    record = tmp_path / "records" / "la_official" / "vnet_8-seed1337"
    lines = (record / "eval-test" / "case_errors.csv").read_text().splitlines()
    assert lines[0].startswith("case,atrium,false_negative,false_positive") and len(lines) == 3
    atrium, missed = (int(v) for v in lines[1].split(",")[1:3])
    assert atrium > 0 and missed == atrium
    assert not (record / "eval-la_eval10" / "case_errors.csv").exists()  # that run folder has no predictions


def test_the_precision_cell_names_the_bf16_hardware_of_every_cpu_a_run_trained_on():
    zen5 = "AMD EPYC, family 26 model 2 (avx2 avx512_bf16 avx512f)"
    xeon = "Intel(R) Xeon(R) Processor, family 6 model 167 (amx_bf16 avx2 avx512_bf16 avx512f)"
    run = {"precision": "mixed_bfloat16", "sessions": [{"cpu": zen5}, {"cpu": xeon}, {"cpu": zen5}]}
    assert la_results._precision_cell(run) == "mixed_bfloat16 (AVX512-BF16, AMX)"
    assert la_results._precision_cell({"precision": "float32"}) == "float32"  # a run from before the sessions
    assert la_results._precision_cell(None) == "–"


def test_status_shows_only_the_protocol_and_rows_asked_for(capsys):
    assert la_results.main(["status", "--protocol", "full", "sassnet_8", "vnet_80"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["full", f"{row}-seed{seed}"] for row in ("sassnet_8", "vnet_80")
                                                    for seed in (1337, 1338, 1339)]
    assert la_results.main(["status"]) == 0  # no filter: every protocol's every run
    shown = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert shown == set(la_results.PROTOCOLS)
    assert la_results.main(["status", "vnet_80"]) == 0  # without --protocol a row of any protocol may be named
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()] == [
        [protocol, f"vnet_80-seed{seed}"] for protocol in ("full", "full_uamt") for seed in (1337, 1338, 1339)]
    with pytest.raises(SystemExit):  # a row the protocol does not train is refused, as for `run`
        la_results.main(["status", "--protocol", "official_w010", "vnet_8"])


def test_run_rows_passes_the_thread_count_asked_for_to_every_step(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(la_results.subprocess, "call", lambda argv, cwd, stdout=None, stderr=None: calls.append(argv))
    row = la_results.ROW_BY_KEY["vnet_16"]
    assert la_results.run_rows([row], la_results.PROTOCOLS["half"], str(tmp_path / "runs"), "data/LA", [],
                               threads=1) == 0
    assert len(calls) == 2 and all(argv[-2:] == ["--threads", "1"] for argv in calls)
    calls.clear()
    la_results.run_rows([row], la_results.PROTOCOLS["half"], str(tmp_path / "runs"), "data/LA", [])
    assert calls and all("--threads" not in argv for argv in calls)  # by default TensorFlow takes every core
    with pytest.raises(SystemExit):
        la_results.main(["run", "vnet_16", "--threads", "0", "--data-root", "."])


def test_rows_compared_case_by_case_use_only_the_seeds_both_finished(tmp_path):
    runs = []
    for name, seeds in (("sassnet", {1337: (90.0, 60.0), 1338: (50.0, 50.0)}), ("vnet", {1337: (80.0, 40.0)})):
        finished = []
        for seed, (a, b) in seeds.items():
            evaluation = tmp_path / f"{name}-{seed}" / "eval-test"
            evaluation.mkdir(parents=True)
            (evaluation / "per_case.csv").write_text(f"case,dice\nA,{a / 100}\nB,{b / 100}\n")
            finished.append((seed, str(evaluation.parent), {}))
        runs.append(finished)
    assert la_results._seed_paired_cases(*runs, "eval-test") == (
        " Paired by seed (seed 1337): better on 2 of 2 cases; without the case that moved most +10.00 (`B` +20.0).")
    assert la_results._seed_paired_cases(runs[0], [], "eval-test") == ""  # nothing in common: no sentence


def test_an_evaluation_pass_is_kept_only_when_both_of_its_results_are_newer_than_the_weights(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(la_results.subprocess, "call", lambda argv, cwd, stdout=None, stderr=None: calls.append(argv))
    row, half = la_results.ROW_BY_KEY["vnet_16"], la_results.PROTOCOLS["half"]
    run = tmp_path / "runs" / "vnet_16"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "vnet_last.weights.h5").write_bytes(b"")
    os.utime(run / "weights" / "vnet_last.weights.h5", (0, 0))
    _write(run / "eval-la_eval10" / "summary.json", _summary(80.0))  # the NMS result of the pass is missing
    la_results.run_row(row, half, str(tmp_path / "runs"), "data/LA", [])
    assert [argv[1] for argv in calls] == ["train.py", "-m"]  # evaluated again
    calls.clear()
    _write(run / "eval-la_eval10-nms" / "summary.json", _summary(81.0))
    la_results.run_row(row, half, str(tmp_path / "runs"), "data/LA", [])
    assert [argv[1] for argv in calls] == ["train.py"]  # both newer than the weights: kept
