"""tools/records.py: the recorded runs' layout, `<records>/<row>[-seed<S>]/...`, and the LA release's default place."""

import os
import pathlib

import yaml

from tools.records import LA_ROOT, REPO, default_la_root, recorded_files, row_of, run_name


def test_row_of_strips_the_seed_only():
    assert row_of("sassnet_8-seed1338") == "sassnet_8"
    assert row_of("vnet_80") == "vnet_80"
    assert row_of("vnet_sdm_8-seed1") == "vnet_sdm_8"


def test_run_name_is_what_row_of_reads_back():
    assert run_name("sassnet_8", 1338) == "sassnet_8-seed1338"
    assert run_name("vnet_80", None) == "vnet_80"
    for row, seed in (("sassnet_8", 1338), ("vnet_80", None), ("vnet_sdm_8", 1)):
        assert row_of(run_name(row, seed)) == row


def test_recorded_files_finds_each_runs_file_by_row(tmp_path):
    for run in ("vnet_8-seed1337", "vnet_8-seed1338", "vnet_80", "sassnet_8-seed1337", "empty-seed1"):
        (tmp_path / run / "eval-test").mkdir(parents=True)
    for run in ("vnet_8-seed1337", "vnet_8-seed1338", "vnet_80", "sassnet_8-seed1337"):
        (tmp_path / run / "eval-test" / "per_case.csv").write_text("case,dice\n")
    found = recorded_files(str(tmp_path), "eval-test", "per_case.csv")
    assert [(row, run) for row, run, _ in found] == [
        ("sassnet_8", "sassnet_8-seed1337"), ("vnet_8", "vnet_8-seed1337"), ("vnet_8", "vnet_8-seed1338"),
        ("vnet_80", "vnet_80")]
    assert all(path == str(tmp_path / run / "eval-test" / "per_case.csv") for _, run, path in found)
    # vnet_80 shares vnet_8's prefix but is another row
    assert [run for _, run, _ in recorded_files(str(tmp_path), "eval-test", "per_case.csv", rows={"vnet_8"})] == [
        "vnet_8-seed1337", "vnet_8-seed1338"]
    assert recorded_files(str(tmp_path / "missing"), "scalars.csv") == []


def test_the_la_root_default_is_the_configs_data_root_from_the_repository():
    assert os.path.isabs(default_la_root())
    assert pathlib.Path(default_la_root()) == (pathlib.Path(REPO) / LA_ROOT).resolve()
    configs = sorted((pathlib.Path(REPO) / "sassnet_tf" / "configs").glob("la_*.yaml"))
    assert configs
    for config in configs:  # train.py, run from the root, reads the same place the tools default to
        assert yaml.safe_load(config.read_text())["data"]["root"] == LA_ROOT, config.name
