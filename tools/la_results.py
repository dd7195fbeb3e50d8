"""Run and publish the LA results tables (docs/RESULTS.md), one resumable command per row.

    python tools/la_results.py run sassnet_8                    # train (resuming), evaluate, record the results
    python tools/la_results.py run all --jobs 2                 # every row, two at a time, one thread each
    python tools/la_results.py run sassnet_8 --protocol short   # the 1/5 schedule, which fits one 3-hour session
    python tools/la_results.py run vnet_16 --protocol official  # half resolution on test.list, three seeds
    python tools/la_results.py run sassnet_16 --protocol full   # the paper's full-resolution protocol on test.list
    python tools/la_results.py status                           # iteration and state of every row
    python tools/la_results.py status --protocol full           # ... of one protocol's rows (name rows to narrow it)
    python tools/la_results.py table                            # rewrite docs/RESULTS.md and its curves

Four protocols share the rows (methods x labels): `half` ("LA half resolution", the paper's 6000 iterations) and
`short` (every schedule scaled by 1/5), scored on the development list below; `official` (half's schedule, three
seeds) and `full` (the paper's full-resolution configs, the same three seeds, a checkpoint every 50 iterations; with
V-Net on all 80 scans labeled), each also scored on the 20 volumes of `test.list` (records `<row>-seed<S>`). A row
trains `configs/<row config>` (plus the protocol's overrides) into `runs/la_<protocol>/<row>` (`--resume` when the run
folder exists), then evaluates the last weights on the 10 cases of `configs/lists/la_eval10.list` (held out of every
row but V-Net (80), which labels all of train.list), with and without the largest-component filter ("NMS"), and copies
what a table needs (run.json, config, evaluation summaries, per-case metrics, the training scalars as CSV: no weights)
to `docs/results/la_<protocol>/<row>`. Run folders are scratch that a new machine does not have; `table` reads only
those records, so a table regenerated anywhere keeps every finished row and never fills a row with numbers its run did
not produce.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # sassnet_tf from this checkout; imported lazily (TensorFlow is slow to load)

from tools.records import LA_ROOT as DEFAULT_ROOT  # noqa: E402  (relative to the root, where the commands run)
from tools.records import run_name as key_run_name  # noqa: E402  (the records' naming rule)

EVAL_LIST = "configs/lists/la_eval10.list"
# The development list is the last 10 IDs of train.list's 80 and a row labels the first N: a row with N > 70 trains on
# those 10 cases' labels, so its development-list numbers are training-set numbers.
TRAIN_CASES, EVAL_CASES = 80, 10
RECORDS = "docs/results"
FINDINGS = "docs/results/findings.md"
CURVE_TAGS = ("train/loss", "train/dice_loss", "train/sdm_loss", "train/d_loss")  # plotted
# Recorded: the curves and what tells the adversarial balance and the speed afterwards.
RECORD_TAGS = (*CURVE_TAGS, "train/adv_loss", "train/d_accuracy", "train/consistency_weight", "train/lr",
               "train/seconds_per_iteration")
EVAL_DIRS = ("eval-la_eval10", "eval-la_eval10-nms")  # without / with the largest-component filter
SCALARS = "scalars.csv"


@dataclass(frozen=True)
class Row:
    key: str
    method: str
    labeled: int
    unlabeled: int
    config: str | None  # the half-resolution config (None: the row exists at full resolution only)
    paper: tuple  # Dice %, Jaccard %, ASD, 95HD of the paper's Tables 1-2 (full resolution, official test split)
    full_config: str | None = None  # the full-resolution config (the paper's protocol)
    paper_nms: tuple | None = None  # the same with the largest component kept (the paper gives it for SASSNet only)


ROWS = (
    Row("vnet_8", "V-Net", 8, 0, "configs/la_vnet_8labeled_half.yaml", (79.99, 68.12, 5.48, 21.11),
        "configs/la_vnet_8labeled.yaml"),
    Row("vnet_sdm_8", "V-Net + SDM", 8, 0, "configs/la_vnet_sdm_8labeled_half.yaml", (81.12, 69.75, 6.93, 25.58),
        "configs/la_vnet_sdm_8labeled.yaml"),
    Row("sassnet_8", "SASSNet", 8, 72, "configs/la_8labeled_half.yaml", (86.81, 76.92, 3.94, 12.54),
        "configs/la_8labeled.yaml", (87.32, 77.72, 2.55, 9.62)),
    Row("vnet_16", "V-Net", 16, 0, "configs/la_vnet_16labeled_half.yaml", (86.03, 76.06, 3.51, 14.26),
        "configs/la_vnet_16labeled.yaml"),
    Row("sassnet_16", "SASSNet", 16, 64, "configs/la_16labeled_half.yaml", (89.27, 80.82, 3.13, 8.83),
        "configs/la_16labeled.yaml", (89.54, 81.24, 2.20, 8.24)),
    Row("vnet_80", "V-Net (all labeled)", 80, 0, None, (91.14, 83.82, 1.52, 5.75), "configs/la_vnet_80labeled.yaml"),
)
ROW_BY_KEY = {row.key: row for row in ROWS}


@dataclass(frozen=True)
class Protocol:
    key: str
    title: str
    sets: tuple  # config overrides (train.py --set) on top of every row's config
    schedule: str  # Markdown: the schedule, for the table's heading paragraph
    # (name, list file) of each evaluation, the first the table's; list files relative to the data root or the repo
    evaluations: tuple = (("la_eval10", EVAL_LIST),)
    seeds: tuple = (None,)  # train.seed of each run of a row; None: the config's, in a folder named after the row
    full_resolution: bool = False  # train the rows' full-resolution configs (the paper's protocol)
    row_keys: tuple = ()  # the rows of an ablation protocol (empty: every row with a config)
    paired_with: str | None = None  # an ablation's base protocol: each run pairs with that one's run of row and seed
    # a full-resolution protocol's half-resolution counterpart on the same split (its rows' Dice beside the paper's)
    half_resolution_twin: str | None = None

    def config_of(self, row: Row) -> str | None:
        """The config a row trains under this protocol (None: the row has no run here)."""
        if self.row_keys and row.key not in self.row_keys:
            return None
        return row.full_config if self.full_resolution else row.config

    @property
    def rows(self) -> tuple:
        """The rows this protocol has a config for."""
        return tuple(row for row in ROWS if self.config_of(row))

    @property
    def eval_dirs(self) -> tuple:
        """Evaluation folders of a run: (without NMS, with NMS) for each evaluation, the table's first."""
        return tuple(f"eval-{name}{nms}" for name, _ in self.evaluations for nms in ("", "-nms"))

    @property
    def folder(self) -> str:
        """Name of the protocol's folder of run folders (under runs/) and of records (under RECORDS)."""
        return f"la_{self.key}"

    @property
    def runs(self) -> str:
        return f"runs/{self.folder}"

    @property
    def records(self) -> str:
        return f"{RECORDS}/{self.folder}"


# The protocols on the official split (`official`, `full` and their ablations) share these, so that runs pair by seed
# across them: test.list first (the table's), then the development list; seed 1337 (the reference's) first.
TEST_SPLIT_EVALUATIONS = (("test", "test.list"), ("la_eval10", EVAL_LIST))
TEST_SPLIT_SEEDS = (1337, 1338, 1339)

PROTOCOLS = {
    "half": Protocol("half", "LA half resolution, the paper's schedule", (),
                     "the paper's 6000 iterations, learning-rate steps at 2500 and 5000 and w(t) ramp (40 steps of 150 "
                     "iterations)"),
    "short": Protocol("short", "LA half resolution, 1/5 schedule",
                      ("train.iterations=1200", "train.lr_decay_steps=[500,1000]", "train.rampup_interval=30"),
                      "every schedule scaled by 1/5 -- 1200 iterations, learning-rate steps at 500 and 1000, the w(t) "
                      "ramp in 40 steps of 30 iterations -- so that a SASSNet row (4.9 s per iteration on the EPYC of "
                      "sessions 1-6) fits in one 3-hour session, whose machine's run folders are not sure to outlive "
                      "it"),
    "full": Protocol("full", "LA full resolution on the official test split: the paper's protocol",
                     ("train.checkpoint_every=50",),
                     "the paper's protocol: full resolution, 112x112x80 patches, stride 18/18/4, 6000 iterations, "
                     "learning-rate steps at 2500 and 5000; evaluated on the 20 volumes of `test.list` (and on the 10 "
                     "development cases); the seeds of `official`, seed 1337 first for every row (issue 20's table), "
                     "then 1338 and 1339 to give a row a spread (a SASSNet run is ~5.6 h on a 2-core Xeon with AMX in "
                     "bf16, 3.3-3.9 s per iteration, ~7 h on the EPYC Zen 5, ~12 h on a Zen 4, 7.0 s, ~18 h on an "
                     "Intel Xeon without AMX in float32, 10.7-11.3 s), a checkpoint every 50 iterations (a few "
                     "minutes) so that a run survives stops and moves between machines",
                     evaluations=TEST_SPLIT_EVALUATIONS, seeds=TEST_SPLIT_SEEDS,
                     full_resolution=True, half_resolution_twin="official"),
    "official": Protocol("official", "LA half resolution on the official test split, with seeds", (),
                         "the paper's 6000 iterations, learning-rate steps at 2500 and 5000 and w(t) ramp (40 steps of "
                         "150 iterations), as `half`; evaluated on the 20 volumes of `test.list` (and on the 10 "
                         "development cases), three seeds per row",
                         evaluations=TEST_SPLIT_EVALUATIONS, seeds=TEST_SPLIT_SEEDS),
}


def _ablation_of(key: str, title: str, sets: tuple, schedule: str, row_keys: tuple,
                          base: str = "official") -> Protocol:
    """A protocol that is `base` (`official` unless said) with `sets` on top, for `row_keys` only: the same schedule,
    evaluations and seeds, so each of its runs pairs with `base`'s run of that row and seed."""
    return replace(PROTOCOLS[base], key=key, title=f"Ablation: {title}", sets=PROTOCOLS[base].sets + sets,
                   schedule=f"as `{base}`, {schedule}; the same seeds, so each run pairs with `{base}`'s",
                   row_keys=row_keys, paired_with=base, half_resolution_twin=None)


for _ablation in (
    # Issue 21: `train.d_reuse_forward` becomes the default only if the same rows with the same seeds lose no Dice.
    _ablation_of("official_d_reuse", "`official` with the D step reusing the network step's forward pass "
                          "(`train.d_reuse_forward=true`)", ("train.d_reuse_forward=true",),
                          "with the discriminator step fed the network step's SDMs (training-mode batch norm and "
                          "dropout) instead of a second, inference-mode forward pass", ("sassnet_16", "sassnet_8")),
    # Issue 19 point 4: is the 8-label row's adversarial weight (the reference's 0.015, against 0.01 at 16 labels,
    # where the discriminator stays weaker) what costs SASSNet (8) typical scans? The 16-label value, not a tuned one.
    _ablation_of("official_w010", "`official` SASSNet (8) with the 16-label adversarial weight "
                          "(`train.consistency=0.01`)", ("train.consistency=0.01",),
                          "with w(t)'s maximum 0.01 (the reference's value for 16 labeled scans) instead of 0.015",
                          ("sassnet_8",)),
    # Issue 19 point 4: SASSNet's gain over V-Net sits on the dark test scans. Does intensity augmentation alone give
    # V-Net that gain (and does SASSNet add to it)? The range spans the training images' contrast: image std over
    # the 80 scans of train.list 0.31-1.65 around a median of 0.92 (findings, session 3), i.e. x0.34-x1.8.
    _ablation_of("official_intensity", "`official` with intensity augmentation "
                          "(`data.intensity_scale=[0.34,1.8]`)", ("data.intensity_scale=[0.34,1.8]",),
                          "with each training patch's image multiplied by a random factor exp(U(ln 0.34, ln 1.8)) "
                          "after the reference's rotation, flip and crop (whose random draws stay the same)",
                          ("vnet_16", "sassnet_16")),
    # Issue 19 point 4: the `official` rows trained in mixed_bfloat16 (what `auto` picks on the AVX512-BF16 EPYC).
    # Do bf16 numerics cost SASSNet (8) -- the adversarial and SDM terms are small differences of large ones -- or
    # V-Net (8)? The same runs in float32 separate it.
    _ablation_of("official_float32", "`official` in float32 (`train.precision=float32`)",
                          ("train.precision=float32",),
                          "trained and evaluated in float32 instead of what `--precision auto` picks (mixed_bfloat16 "
                          "on the CPUs with native bf16 the `official` rows ran on)", ("vnet_8", "sassnet_8")),
    # Issue 20 point 4: our V-Net rows train as SASSNet's trainer does (2 labeled patches, Dice); the authors'
    # supervised-only V-Net script in UA-MT (which SASSNet's code is built on) takes 4 patches and (CE + Dice) / 2.
    # Does that find the two dark test scans that full-resolution V-Net (16) misses, and does V-Net (80), which misses
    # two dark scans it trained on (development list), fit them with twice the patches and a per-voxel loss?
    _ablation_of("full_uamt", "`full` V-Net as UA-MT's supervised-only script trains it "
                          "(`data.labeled_bs=4`, `train.seg_loss=ce_dice`)",
                          ("data.labeled_bs=4", "train.seg_loss=ce_dice"),
                          "with 4 labeled patches per iteration instead of 2 and the loss (cross-entropy + Dice) / 2 "
                          "instead of Dice (about twice the time per iteration)", ("vnet_16", "vnet_80"), base="full"),
    # Issue 20 point 4: full-resolution V-Net + SDM (8) in mixed_bfloat16 scored 7-42 points below the float32 V-Net (8)
    # on 8 of 20 test scans. Is it bf16 at full resolution (the half-resolution float32 pairs tested V-Net alone)?
    _ablation_of("full_float32", "`full` in float32 (`train.precision=float32`)", ("train.precision=float32",),
                          "trained and evaluated in float32 instead of what `--precision auto` picks (mixed_bfloat16 "
                          "on the CPUs with native bf16 the row ran on)", ("vnet_sdm_8",), base="full"),
    # Issue 20 point 4: full-resolution SASSNet (16) finds less of the dark scans than SASSNet (8) (test and development
    # lists), with a weaker adversarial pull (w(t) up to 0.01 against 0.015; 16 % of the loss against 24 %). Does the
    # 8-label weight, the reference's other value and not a tuned one, find them at 16 labels?
    _ablation_of("full_w015", "`full` SASSNet (16) with the 8-label adversarial weight (`train.consistency=0.015`)",
                          ("train.consistency=0.015",),
                          "with w(t)'s maximum 0.015 (the reference's value for 8 labeled scans) instead of 0.01",
                          ("sassnet_16",), base="full"),
):
    PROTOCOLS[_ablation.key] = _ablation
DEFAULT_PROTOCOL = "half"


def trains_on_eval_list(row: Row) -> bool:
    """Whether a row's labeled cases (the first N of train.list) include the development list (its last 10)."""
    return row.labeled > TRAIN_CASES - EVAL_CASES


def run_name(row: Row, seed) -> str:
    """Folder name of a row's run and record (`tools/records.py`'s rule, for the row's key)."""
    return key_run_name(row.key, seed)


def row_steps(row: Row, protocol: Protocol, runs: str, data_root: str, python: str = "python", sets=(),
              seed=None) -> list:
    """(argv, evaluation folders or None) of each step `run` executes for a row: train, then each of the protocol's
    evaluations, one sliding-window pass scored without and with NMS (`--nms-output`).

    `sets`: KEY=VALUE config overrides given to train.py after the protocol's own; `seed`: the run's train.seed
    (None: the config's).
    """
    run = f"{runs}/{run_name(row, seed)}"
    seed_set = () if seed is None else (f"train.seed={seed}",)
    train = [python, "train.py", "--config", protocol.config_of(row), "--data-root", data_root, "--output", run,
             "--no-progress",
             *[a for item in (*protocol.sets, *seed_set, *sets) for a in ("--set", item)]]
    steps = [(train, None)]
    for name, list_file in protocol.evaluations:
        evaluate = [python, "-m", "sassnet_tf.evaluate", "--model", run, "--weights", "last", "--list", list_file,
                    "--no-png"]
        steps.append((evaluate + ["--output", f"{run}/eval-{name}", "--nms-output", f"{run}/eval-{name}-nms"],
                      (f"eval-{name}", f"eval-{name}-nms")))
    return steps


def row_commands(row: Row, protocol: Protocol, data_root: str = DEFAULT_ROOT, seed=None) -> list:
    """The shell commands `run` executes for a row (printed in RESULTS.md)."""
    commands = [shlex.join(argv) for argv, _ in row_steps(row, protocol, protocol.runs, data_root, seed=seed)]
    commands[0] += " [--resume]"
    return commands


def row_config(row: Row, protocol: Protocol, seed=None):
    """The row's config with the protocol's overrides and the seed (what its runs train)."""
    from sassnet_tf.config import load_config, parse_overrides

    seed_set = [] if seed is None else [f"train.seed={seed}"]
    return load_config(os.path.join(REPO, protocol.config_of(row)), parse_overrides([*protocol.sets, *seed_set]))


def read_json(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def row_state(folder: str, eval_dirs=EVAL_DIRS) -> dict:
    """What a run folder or a record holds (same layout): run.json, the table's evaluation summaries without and
    with NMS (`eval_dirs[:2]`; None if absent), and whether a live process trains in it (`run_dir.in_use`: None
    for a record or a run from before the folder lock)."""
    from sassnet_tf.training.run_dir import in_use

    return {"run": read_json(os.path.join(folder, "run.json")),
            "eval": read_json(os.path.join(folder, eval_dirs[0], "summary.json")),
            "eval_nms": read_json(os.path.join(folder, eval_dirs[1], "summary.json")),
            "in_use": in_use(folder) if os.path.isdir(folder) else None}


def is_done(state: dict, iterations: int) -> bool:
    """A row counts only once its run completed the protocol's iterations (not a shortened smoke run) and was
    evaluated."""
    run = state["run"] or {}
    return run.get("status") == "completed" and run.get("iteration", 0) >= iterations and bool(state["eval"])


def shown_state(record: str, run: str, iterations: int, eval_dirs=EVAL_DIRS) -> tuple:
    """(state, done) a table or `status` shows for a row: its record's when the record is finished, else its run
    folder's progress with the evaluations dropped (numbers come from records only)."""
    state = row_state(record, eval_dirs)
    if is_done(state, iterations):
        return state, True
    return dict(row_state(run, eval_dirs), eval=None, eval_nms=None), False


def _distance(summary: dict, key: str, column: str) -> str:
    """A distance mean as a cell, with "(n/N cases)" when it leaves out cases whose prediction was empty: Dice counts
    such a case as 0, ASD and 95HD cannot, so a run that failed a hard case would otherwise look closer."""
    cell = f"{summary['paper_table'][column]:.2f}"
    metrics = summary.get("metrics") or {}  # records rebuilt from an old snapshot have no per-metric counts
    stats = metrics.get(key) or {}
    if stats.get("n_undefined") and metrics.get("cases"):
        cell += f" ({stats['n']}/{metrics['cases']} cases)"
    return cell


def _metrics(summary) -> str:
    if not summary:
        return "| – | – | – | – "
    t = summary["paper_table"]
    return (f"| {t['Dice (%)']:.2f} | {t['Jaccard (%)']:.2f} | {_distance(summary, 'asd', 'ASD (voxel)')} "
            f"| {_distance(summary, 'hd95', '95HD (voxel)')} ")


def median_dice(summary_dir: str) -> str:
    """Median Dice % over the evaluation cases, as a table cell: unlike the mean, one failed case barely moves it
    (docs/results/findings.md, Session 6: RSZY41MT2FGDKHWWL5L2 swings 0-73 % between runs)."""
    dice = per_case_dice(summary_dir).values()
    return f"{statistics.median(dice):.2f}" if dice else "–"


BF16_LABELS = {"amx": "AMX", "avx512_bf16": "AVX512-BF16", "no_bf16": "no bf16"}


def _precision_cell(run: dict | None) -> str:
    """The run's precision and, for runs that record their sessions (trainer.py, from session 18 on), the bf16
    hardware of each CPU kind it trained on: a run resumed on another kind ran other kernels."""
    from sassnet_tf.utils.runtime import recorded_cpu_kind

    run = run or {}
    kinds = []
    for session in run.get("sessions", []):
        kind = BF16_LABELS[recorded_cpu_kind(session.get("cpu", ""))]
        if kind not in kinds:
            kinds.append(kind)
    precision = run.get("precision") or "–"
    return f"{precision} ({', '.join(kinds)})" if kinds else precision


def _status(state: dict, iterations: int) -> str:
    run = state["run"]
    if run is None:
        return "not started"
    it = run.get("iteration", 0)
    hours = (run.get("train_seconds") or 0) / 3600
    if is_done(state, iterations):
        return f"done, {hours:.1f} h training"
    status = run.get("status", "?")
    if status == "running" and state.get("in_use") is False:  # its process ended without a word: killed
        status = "stopped (no process trains it; the same command resumes it)"
    elif state.get("in_use") and status != "running":  # resumed, still loading before it rewrites run.json
        status = "running"
    text = f"{status}: iteration {it} of {iterations}, {hours:.1f} h so far"
    recent = run.get("recent_seconds_per_iteration")
    if recent and iterations > it:
        # the median of its last checkpoint intervals (trainer.py): a pause (SIGSTOP) or a shared core in one
        # interval does not count, where the mean over the run counts every paused hour
        text += f", ~{recent * (iterations - it) / 3600:.1f} h more at its recent {recent:.2f} s per iteration"
    elif it > 0 and hours > 0 and iterations > it:
        # runs from before that field: the mean speed so far, the hours a resumed run still needs
        text += f", ~{hours / it * (iterations - it):.1f} h more at its speed so far"
    return text


def runs_protocol(run: str, row: Row, protocol: Protocol, seed=None) -> bool:
    """True when a run folder finished the row's protocol and every evaluation: its resolved config is the
    protocol's with this seed (the data root aside), so a smoke run or one with extra `--set` overrides is never
    recorded as a row."""
    config = row_config(row, protocol, seed)
    if not is_done(row_state(run, protocol.eval_dirs), config.train.iterations) or not all(
            os.path.isfile(os.path.join(run, d, "summary.json")) for d in protocol.eval_dirs):
        return False
    from sassnet_tf.training.run_dir import RunDir, RunDirError
    from sassnet_tf.config import ConfigError

    try:
        trained = RunDir(run).read_config().to_dict()
    except (RunDirError, ConfigError):
        return False
    expected = config.to_dict()
    trained["data"].pop("root", None)
    expected["data"].pop("root", None)
    return trained == expected


def record_files(eval_dirs=EVAL_DIRS) -> tuple:
    """What a record keeps of a run folder (same relative paths), besides scalars.csv."""
    return ("run.json", "config.yaml", *(f"{d}/{f}" for d in eval_dirs for f in ("summary.json", "per_case.csv")))


def record_row(run: str, record: str, eval_dirs=EVAL_DIRS) -> None:
    """Copy what the tables need of a finished, evaluated run folder into its record (files replaced atomically);
    the TensorBoard scalars become scalars.csv."""
    from sassnet_tf.utils.atomic import atomic_path, atomic_write_text

    for name in record_files(eval_dirs):
        source = os.path.join(run, name)
        if os.path.isfile(source):
            with atomic_path(os.path.join(record, name)) as tmp:
                shutil.copyfile(source, tmp)
    scalars = read_scalars(os.path.join(run, "logs"))
    if any(scalars.values()):
        lines = ["tag,step,value"] + [f"{tag},{step},{value:.6g}" for tag, points in scalars.items()
                                      for step, value in points]
        atomic_write_text(os.path.join(record, SCALARS), "\n".join(lines) + "\n")


def record_finished(protocol: Protocol, runs: str, records: str) -> list:
    """Record every run (row and seed) whose folder under `runs` is finished and evaluated; returns their names."""
    recorded = []
    for row in protocol.rows:
        for seed in protocol.seeds:
            name = run_name(row, seed)
            run = os.path.join(runs, name)
            if runs_protocol(run, row, protocol, seed):
                record_row(run, os.path.join(records, name), protocol.eval_dirs)
                recorded.append(name)
    return recorded


def read_scalars(logdir: str, tags=RECORD_TAGS) -> dict:
    """{tag: [(step, value), ...]} from the TensorBoard event files of a run (tf.summary scalars)."""
    out = {tag: [] for tag in tags}
    paths = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    if not paths:
        return out
    import tensorflow as tf

    for path in paths:
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag in out:
                    out[value.tag].append((event.step, float(tf.make_ndarray(value.tensor))))
    return {tag: sorted(dict(points).items()) for tag, points in out.items()}  # a resumed run rewrites steps


def read_record_scalars(record: str, tags=RECORD_TAGS) -> dict:
    """{tag: [(step, value), ...]} from a record's scalars.csv (empty lists when it has none)."""
    out = {tag: [] for tag in tags}
    try:
        with open(os.path.join(record, SCALARS), encoding="utf-8", newline="") as fh:
            for r in csv.DictReader(fh):
                if r["tag"] in out:
                    out[r["tag"]].append((int(r["step"]), float(r["value"])))
    except OSError:
        pass
    return out


def per_case_dice(summary_dir: str) -> dict:
    """{case: Dice %} from an evaluation's per_case.csv ({} when absent)."""
    try:
        with open(os.path.join(summary_dir, "per_case.csv"), encoding="utf-8", newline="") as fh:
            return {r["case"]: 100 * float(r["dice"]) for r in csv.DictReader(fh)}
    except (OSError, KeyError, ValueError):
        return {}


def protocol_section(protocol: Protocol, records: str, runs: str) -> tuple:
    """(Markdown lines of a protocol's two tables, [(row, record folder)] of its finished rows).

    Numbers come from records only; a row without one shows the progress of its run folder under `runs`, if any.
    """
    lines = [f"## {protocol.title} (`--protocol {protocol.key}`)", "",
             f"Schedule: {protocol.schedule}. Records: `{protocol.records}/<row>`.", "",
             "| Method | Labeled | Unlabeled | Dice % | Jaccard % | ASD | 95HD | median Dice % | paper Dice "
             "| paper Jaccard | paper ASD | paper 95HD | seed | precision | state |",
             "|---" * 15 + "|"]
    nms_lines = ["| Method | Labeled | Dice % | Jaccard % | ASD | 95HD |", "|---|---|---|---|---|---|"]
    finished = []
    for row in protocol.rows:
        config = row_config(row, protocol)
        record = os.path.join(records, row.key)
        state, done = shown_state(record, os.path.join(runs, row.key), config.train.iterations)
        paper = "".join(f"| {v:.2f} " for v in row.paper)
        median = median_dice(os.path.join(record, EVAL_DIRS[0])) if done else "–"
        precision = _precision_cell(state["run"])
        lines.append(f"| {row.method} | {row.labeled} | {row.unlabeled} {_metrics(state['eval'])}| {median} {paper}"
                     f"| {config.train.seed} | {precision} | {_status(state, config.train.iterations)} |")
        nms_lines.append(f"| {row.method} | {row.labeled} {_metrics(state['eval_nms'])}|")
        if done:
            finished.append((row, record))
    lines += ["", "With the largest connected component kept (\"+NMS\"):", "", *nms_lines, ""]
    return lines, finished


METRIC_COLUMNS = (("Dice (%)", "Dice %"), ("Jaccard (%)", "Jaccard %"), ("ASD (voxel)", "ASD"),
                  ("95HD (voxel)", "95HD"))


def _mean_std(values: list) -> str:
    """"mean ± sample std" over seeds (the mean alone for one seed, "–" for none)."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def seed_metrics(records: list, eval_dir: str) -> dict:
    """{table column: [value of each record]} of one evaluation over a row's finished seeds."""
    summaries = [read_json(os.path.join(record, eval_dir, "summary.json")) for record in records]
    return {column: [s["paper_table"][column] for s in summaries if s] for column, _ in METRIC_COLUMNS}


def exceeds_seed_spread(a: list, b: list) -> tuple:
    """(mean(a) - mean(b), its standard error from the seeds' spread, whether |difference| > 2 standard errors);
    None for the last two without two seeds on each side."""
    difference = statistics.mean(a) - statistics.mean(b)
    if len(a) < 2 or len(b) < 2:
        return difference, None, None
    error = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
    return difference, error, abs(difference) > 2 * error


def seeds_section(protocol: Protocol, records: str, runs: str) -> list:
    """Markdown lines of a protocol with seeds: mean ± std over the finished seeds of each row on the table's
    evaluation (without and with NMS, and on the protocol's other evaluations), SASSNet against V-Net at equal
    labels, then every seed's own numbers. Numbers come from records only."""
    (name, list_file), dirs = protocol.evaluations[0], protocol.eval_dirs
    lines = [f"## {protocol.title} (`--protocol {protocol.key}`)", "",
             f"Schedule: {protocol.schedule}. Evaluation: the last weights on `{list_file}` (`{name}`). Seeds "
             f"{', '.join(map(str, protocol.seeds))}; a cell is the mean ± sample standard deviation over the row's "
             f"finished seeds (n). Records: `{protocol.records}/<row>-seed<S>`.", ""]
    finished, progress = {}, {}
    for row in protocol.rows:
        finished[row.key], progress[row.key] = [], []
        for seed in protocol.seeds:
            config = row_config(row, protocol, seed)
            record = os.path.join(records, run_name(row, seed))
            state, done = shown_state(record, os.path.join(runs, run_name(row, seed)), config.train.iterations, dirs)
            if done:
                finished[row.key].append((seed, record, state))
            progress[row.key].append((seed, state, config.train.iterations))
    for index, (evaluation, evaluation_list) in enumerate(protocol.evaluations):
        for nms in (False, True):
            eval_dir = dirs[2 * index + nms]
            title = f"`{evaluation}`" + (", largest connected component kept (\"+NMS\")" if nms else "")
            beside_paper = index == 0  # the paper's numbers are on the table's evaluation (test.list)
            lines += [f"### {title}", "", "| Method | Labeled | Unlabeled | n | " +
                      " | ".join(label for _, label in METRIC_COLUMNS) +
                      (" | paper Dice | paper Jaccard | paper ASD | paper 95HD |" if beside_paper else " |"),
                      "|---" * (8 + (4 if beside_paper else 0)) + "|"]
            seen = [row for row in protocol.rows if evaluation_list == EVAL_LIST and trains_on_eval_list(row)]
            for row in protocol.rows:
                metrics = seed_metrics([record for _, record, _ in finished[row.key]], eval_dir)
                cells = " | ".join(_mean_std(metrics[column]) for column, _ in METRIC_COLUMNS)
                numbers = row.paper_nms if nms else row.paper
                paper = ("".join(f" {v:.2f} |" for v in numbers) if numbers else " – |" * 4) if beside_paper else ""
                lines.append(f"| {row.method}{' †' if row in seen else ''} | {row.labeled} | {row.unlabeled} | "
                             f"{len(finished[row.key])} | {cells} |{paper}")
            lines.append("")
            if seen:
                lines += [f"† trained on these {EVAL_CASES} cases' labels (it labels all {TRAIN_CASES} scans of "
                          "`train.list`): training-set numbers, not held-out ones.", ""]
            if index == 0 and not nms:
                lines += _comparisons(protocol.rows, finished, eval_dir)
                if protocol.half_resolution_twin:
                    lines += paper_gaps(protocol, records, finished, eval_dir)
    lines += ["### Every seed", "", "| Run | seed | Dice % | Jaccard % | ASD | 95HD | median Dice % | +NMS Dice % | "
              "precision | state |", "|---" * 10 + "|"]
    for row in protocol.rows:
        for seed, state, iterations in progress[row.key]:
            record = os.path.join(records, run_name(row, seed))
            done = is_done(state, iterations)
            nms = f"{state['eval_nms']['paper_table']['Dice (%)']:.2f}" if done and state["eval_nms"] else "–"
            median = median_dice(os.path.join(record, dirs[0])) if done else "–"
            precision = _precision_cell(state["run"])
            lines.append(f"| {row.method} ({row.labeled}) | {seed} {_metrics(state['eval'] if done else None)}"
                         f"| {median} | {nms} | {precision} | {_status(state, iterations)} |")
    lines.append("")
    if protocol.paired_with:
        lines += paired_section(protocol, records, dirs[0])
    return lines


def paired_section(protocol: Protocol, records: str, eval_dir: str) -> list:
    """Markdown lines: an ablation's Dice beside its base protocol's run of the same row and seed, the difference,
    and each row's mean difference over its pairs (paired, so the seed-to-seed spread of the rows cancels)."""
    base = PROTOCOLS[protocol.paired_with]
    base_records = os.path.join(os.path.dirname(records), base.folder)
    heading = [f"### Paired with `{base.key}` (same row and seed, Dice % on `{protocol.evaluations[0][0]}`)", ""]
    table, summary = [], []
    for row in protocol.rows:
        differences = []
        for seed in protocol.seeds:
            pair = [read_json(os.path.join(folder, run_name(row, seed), eval_dir, "summary.json"))
                    for folder in (records, base_records)]
            if None in pair:
                continue
            this, that = (p["paper_table"]["Dice (%)"] for p in pair)
            differences.append(this - that)
            better, outlier = _case_by_case(*(per_case_dice(os.path.join(folder, run_name(row, seed), eval_dir))
                                              for folder in (records, base_records)))
            table.append(f"| {row.method} ({row.labeled}) | {seed} | {this:.2f} | {that:.2f} | {this - that:+.2f} "
                         f"| {better} | {outlier} |")
        if len(differences) >= 2:
            error = statistics.stdev(differences) / len(differences) ** 0.5
            summary.append(f"- {row.method} ({row.labeled}): mean difference {statistics.mean(differences):+.2f} "
                           f"points over {len(differences)} pairs (standard error {error:.2f}).")
        elif differences:
            summary.append(f"- {row.method} ({row.labeled}): difference {differences[0]:+.2f} points, one pair "
                           "(no spread yet: a single seed cannot tell the change from noise).")
        else:
            summary.append(f"- {row.method} ({row.labeled}): no finished pair yet.")
    if table:  # without a finished pair the summary alone says so
        table = [f"| Run | seed | `{protocol.key}` | `{base.key}` | difference | cases better | difference "
                 "without the case that moved most |", "|---" * 7 + "|"] + table + [""]
    return heading + table + summary + [""]


def _case_by_case(this: dict, that: dict) -> tuple:
    """Two cells of a pair's row from its per-case Dice: on how many shared cases this run is better, and the mean
    difference without the one case whose Dice moved most (one scan can carry a 20-case mean; '–' without cases)."""
    cases = sorted(set(this) & set(that))
    if not cases:
        return "–", "–"
    moves = {case: this[case] - that[case] for case in cases}
    better = f"{sum(move > 0 for move in moves.values())} of {len(cases)}"
    if len(cases) < 2:
        return better, "–"
    most = max(cases, key=lambda case: abs(moves[case]))
    rest = [moves[case] for case in cases if case != most]
    return better, f"{statistics.mean(rest):+.2f} (`{most}` {moves[most]:+.1f})"


def _comparisons(rows: tuple, finished: dict, eval_dir: str) -> list:
    """Markdown lines: SASSNet minus V-Net mean Dice at each label count, against the seeds' spread."""
    lines = []
    for labeled in sorted({row.labeled for row in rows}):
        pair = [next((r for r in rows if r.method == method and r.labeled == labeled), None)
                for method in ("SASSNet", "V-Net")]
        if None in pair:
            continue
        dice = [seed_metrics([record for _, record, _ in finished[row.key]], eval_dir)["Dice (%)"] for row in pair]
        if not all(dice):
            lines.append(f"- SASSNet vs V-Net, {labeled} labeled: not both finished yet.")
            continue
        difference, error, significant = exceeds_seed_spread(*dice)
        verdict = ("fewer than two seeds on a side: no spread to compare with" if error is None else
                   f"standard error {error:.2f} from the seeds; "
                   + ("exceeds" if significant else "does not exceed") + " two standard errors")
        lines.append(f"- SASSNet vs V-Net, {labeled} labeled: mean Dice {difference:+.2f} points ({verdict})."
                     + _seed_paired_cases(*(finished[row.key] for row in pair), eval_dir))
    return lines + [""] if lines else []


def _seed_paired_cases(this: list, that: list, eval_dir: str) -> str:
    """A sentence on two rows' finished runs of the same seeds, case by case (each case's Dice averaged over those
    seeds): on how many cases the first is better and its lead without the case that moved most ('' without
    per-case records)."""
    seeds = sorted({seed for seed, _, _ in this} & {seed for seed, _, _ in that})
    means = []
    for runs in (this, that):
        cases = [per_case_dice(os.path.join(record, eval_dir)) for seed, record, _ in runs if seed in seeds]
        shared = set.intersection(*(set(c) for c in cases)) if cases else set()
        means.append({case: statistics.mean(c[case] for c in cases) for case in shared})
    if not set(means[0]) & set(means[1]):
        return ""
    better, outlier = _case_by_case(*means)
    paired = (f"seed {seeds[0]}" if len(seeds) == 1 else
              f"{len(seeds)} seeds, each case's Dice averaged over them")
    return f" Paired by seed ({paired}): better on {better} cases; without the case that moved most {outlier}."


PAPER_GAP = 1.5  # Dice points: a full-resolution row further than this from the paper's is discussed (issue 20)


def paper_gaps(protocol: Protocol, records: str, finished: dict, eval_dir: str) -> list:
    """Markdown lines: each finished row's mean Dice against the paper's and, where they differ by more than
    PAPER_GAP points, the same row on the same split at half resolution (the protocol's `half_resolution_twin`,
    over its finished seeds), which is what the findings start from."""
    twin = PROTOCOLS[protocol.half_resolution_twin]
    twin_records = os.path.join(os.path.dirname(records), twin.folder)
    lines = []
    for row in protocol.rows:
        dice = seed_metrics([record for _, record, _ in finished[row.key]], eval_dir)["Dice (%)"]
        if not dice:
            continue
        mean, paper = statistics.mean(dice), row.paper[0]
        line = (f"- {row.method} ({row.labeled}): {mean:.2f} against the paper's {paper:.2f} "
                f"({mean - paper:+.2f} points)")
        if abs(mean - paper) <= PAPER_GAP:
            lines.append(f"{line}: within {PAPER_GAP} points.")
            continue
        half = (seed_metrics([os.path.join(twin_records, run_name(row, seed)) for seed in twin.seeds],
                             eval_dir)["Dice (%)"] if twin.config_of(row) else [])
        where = (f"at half resolution on the same split (`--protocol {twin.key}`) {_mean_std(half)} over "
                 f"{len(half)} seed{'s' if len(half) != 1 else ''}" if half else
                 f"no half-resolution run of this row on the same split (`--protocol {twin.key}`)")
        lines.append(f"{line}: more than {PAPER_GAP} points; {where}. The findings say what the half-resolution "
                     "and seed results tell about it and what a run would have to separate.")
    return ["Against the paper's Dice:", "", *lines, ""] if lines else []


def per_case_section(finished: list, cases: list) -> list:
    """Markdown lines: Dice % of each finished row on every evaluation case (no NMS), to compare rows case by case.

    Args:
        finished: [(column name, record folder)].
    """
    if not finished:
        return []
    columns = [(name, per_case_dice(os.path.join(record, EVAL_DIRS[0]))) for name, record in finished]
    lines = ["## Dice per evaluation case", "", "Dice % without NMS, finished rows only.", "",
             "| case | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for case in cases:
        lines.append(f"| `{case}` | " + " | ".join(f"{d[case]:.2f}" if case in d else "–" for _, d in columns) + " |")
    return lines + [""]


def results_markdown(records: str, runs: str, data_root: str = DEFAULT_ROOT, curves: dict | None = None) -> str:
    """RESULTS.md: both protocols' numbers beside the paper's, commands, cases, seeds, wall time.

    Args:
        records: the folder holding `la_<protocol>/<row>` records (numbers are read from there only).
        runs: the folder holding `la_<protocol>/<row>` run folders (progress of unrecorded rows).
        curves: {protocol key: image path relative to the output} of the protocols that have curves.
    """
    with open(os.path.join(REPO, EVAL_LIST), encoding="utf-8") as fh:
        cases = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    lines = [
        "# LA results",
        "",
        "First the paper's protocol at full resolution on the official split (`--protocol full`, seed 1337 for every",
        "row, then more seeds: 5.6-18 h a SASSNet run on 2 cores); then the half-resolution rows with three seeds on",
        "the same split (`--protocol official`); both are scored on the 20 volumes of `test.list`, the paper's test",
        "set. Then the development tables of sessions 1-9, one seed each, scored on 10 cases of `train.list`",
        "(`" + EVAL_LIST + "`). No checkpoint, setting or recipe was chosen by `test.list` scores: every row uses",
        "its last weights and the reference's settings.",
        "",
        f"Snapshot of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, generated by "
        "`python tools/la_results.py table` from the records under `" + RECORDS + "` (a row shows numbers only",
        "once its run has finished and been evaluated). Protocol (\"LA half resolution\", issue 7): every",
        "volume downsampled by 2 per axis (image by linear tent filtering, label by thresholded averaging), patch",
        "64x64x48 (the 56x56x40 of the issue rounded up to multiples of 16, which the 4-level V-Net needs; the 44",
        "slices are zero-padded to 48), stride 9/9/2; probabilities upsampled to full resolution before",
        "thresholding, so Dice/Jaccard/95HD/ASD (voxels, medpy definitions) are on the original grid like the paper's.",
        "Training: labeled = first N IDs of `train.list`, the other 80 - N unlabeled (SASSNet only; V-Net rows use",
        "the labeled cases alone). The `test.list` volumes are in no row's training data. Evaluation of the",
        "development tables: the last weights on the 10 cases of `" + EVAL_LIST + "`,",
        "unlabeled in every row, so no run saw their labels (SASSNet rows saw their images, as in the paper's",
        "transductive setting). The paper's numbers are on the 20 test volumes at full resolution.",
        "\"median Dice\" is the median over the 10 cases, which one failed case barely moves (the mean can move by",
        "8 points on one case, see the findings). ASD and 95HD are means over the cases where the prediction is not",
        "empty (undefined otherwise): a row that finds nothing on a case scores Dice 0 there but leaves that case out",
        "of its distance means (marked \"(9/10 cases)\"), so compare distances over the cases every row found (the",
        "findings do).",
        "\"precision\" is what `train.py --precision auto` chose on the",
        "machine the row ran on: float32 on the 2-core AMD EPYC (AVX2) of sessions 1-6, mixed_bfloat16 on the",
        "2-core Xeon with AMX of sessions 7-9 (per iteration: SASSNet 4.9 s vs 1.5-2.2 s, V-Net + SDM 1.4 s vs",
        "0.47-0.65 s; that VM's speed varied by up to 2x from hour to hour, docs/PERFORMANCE.md), and on the",
        "2-core EPYC Zen 5 with AVX512-BF16 and no AMX of sessions 10-17 (the official-split runs up to",
        "session 17), and on a 2-core Xeon with AMX in session 18 and a 2-core EPYC Zen 4 (AVX512-BF16, no",
        "AMX) in sessions 19-23; on the 2-core Intel Xeon with AVX512-BF16 whose AMX is hidden (session 24)",
        "auto picks float32, which is faster there (docs/PERFORMANCE.md). Runs from session 18 on record each",
        "session's CPU, code version and thread count in their run.json; the cell names their CPUs' bf16",
        "hardware (AMX, AVX512-BF16).",
        "Training times are wall time summed over the sessions a run spanned; a row run beside another",
        "(`--jobs 2`, one thread each) takes ~1.7x the wall time of a row alone on 2 cores (SASSNet 8.5 s vs 4.9 s,",
        "V-Net 2.4 s vs 1.4 s per iteration on the EPYC, docs/PERFORMANCE.md); the findings say how each row ran.",
        "",
    ]
    finished = []
    seeded = [p for p in PROTOCOLS.values() if p.seeds != (None,)]
    for protocol in seeded:
        lines += seeds_section(protocol, os.path.join(records, protocol.folder), os.path.join(runs, protocol.folder))
    for protocol in PROTOCOLS.values():
        if protocol in seeded:
            continue
        section, done = protocol_section(protocol, os.path.join(records, protocol.folder),
                                         os.path.join(runs, protocol.folder))
        lines += section
        finished += [(f"{row.method} ({row.labeled}), {protocol.key}", record) for row, record in done]
    lines += ["## Commands", "", "One command per row (`run` executes the lines below it, adding `--resume` "
              "when the run folder exists, then records the results):", ""]
    for protocol in [*seeded, *(p for p in PROTOCOLS.values() if p not in seeded)]:
        option = "" if protocol.key == DEFAULT_PROTOCOL else f" --protocol {protocol.key}"
        seed = protocol.seeds[0]
        lines += [f"### {protocol.title}", ""]
        if seed is not None:
            lines += [f"`run <row>{option}` trains and scores every seed ({', '.join(map(str, protocol.seeds))}); "
                      f"`--seeds S` one of them. The lines below are seed {seed}'s; another seed's are the same with "
                      f"`-seed<S>` and `train.seed=<S>`.", ""]
        for row in protocol.rows:
            lines += [f"- {row.method}, {row.labeled} labeled: `python tools/la_results.py run {row.key}{option}`", "",
                      "  ```", *[f"  {c}" for c in row_commands(row, protocol, data_root, seed)], "  ```", ""]
    lines += ["`python tools/la_results.py run all` runs every row in turn; `run all --jobs 2` two rows at a time, "
              "each with `--threads 1` (the same results up to float rounding order, 12-26 % more work per hour "
              "on 2 cores).",
              "", *per_case_section(finished, cases), "## Evaluation cases", "", ", ".join(f"`{c}`" for c in cases), ""]
    findings = os.path.join(REPO, FINDINGS)
    if os.path.isfile(findings):  # hand-written analysis, kept across regenerations
        with open(findings, encoding="utf-8") as fh:
            lines += ["## Findings", "", f"(from `{FINDINGS}`)", "", fh.read().strip(), ""]
    if curves:
        lines += ["## Training curves", ""]
        lines += [f"{PROTOCOLS[key].title}:\n\n![training curves, {key}]({path})\n" for key, path in curves.items()]
    return "\n".join(lines)


def plot_curves(records: str, path: str) -> bool:
    """One panel per tag, one line per recorded row of one protocol; False when no row has scalars."""
    series = {row.key: read_record_scalars(os.path.join(records, row.key)) for row in ROWS}
    if not any(points for tags in series.values() for points in tags.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_TAGS), figsize=(4 * len(CURVE_TAGS), 3.2))
    for ax, tag in zip(axes, CURVE_TAGS):
        for index, row in enumerate(ROWS):
            points = series[row.key][tag]
            if points:  # one colour per row in every panel, though a panel may lack some rows
                ax.plot(*zip(*points), label=f"{row.method} ({row.labeled})", linewidth=1, color=f"C{index}")
        ax.set_title(tag)
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def run_row(row: Row, protocol: Protocol, runs: str, data_root: str, sets: list, threads: int | None = None,
            log=None, seed=None) -> int:
    """Train (resuming), evaluate and record one row (with one seed); returns the first non-zero exit code, else 0.

    Commands run from the repository root, so `runs` and `data_root` are taken relative to it (or absolute).
    `sets` are extra train.py overrides (a run with any is not the protocol's, so never recorded); `threads` is
    passed to every step as `--threads`; `log` (an open file) receives the steps' output.
    """
    name = run_name(row, seed)
    run = os.path.join(REPO, runs, name)
    weights = os.path.join(run, "weights", "vnet_last.weights.h5")
    for argv, eval_dirs in row_steps(row, protocol, runs, data_root, python=sys.executable, sets=sets, seed=seed):
        if eval_dirs is None and os.path.isfile(os.path.join(run, "run.json")):
            argv = argv + ["--resume"]
        if threads is not None:
            argv = argv + ["--threads", str(threads)]
        summaries = [os.path.join(run, d, "summary.json") for d in eval_dirs or ()]
        if summaries and all(os.path.isfile(f) and os.path.getmtime(f) > os.path.getmtime(weights)
                             for f in summaries):
            print(f"= {', '.join(summaries)} newer than the weights: evaluation kept", flush=True)
            continue
        print("+", " ".join(argv) + (f"  (output: {log.name})" if log else ""), flush=True)
        code = subprocess.call(argv, cwd=REPO, stdout=log, stderr=log and subprocess.STDOUT)
        if code:
            print(f"! {name}: exit code {code}", flush=True)
            return code
    if runs_protocol(run, row, protocol, seed):  # not after a smoke run (--set)
        record = os.path.join(REPO, protocol.records, name)
        record_row(run, record, protocol.eval_dirs)
        print(f"= {name}: recorded in {record}", flush=True)
        record_case_errors(run, record, protocol, os.path.join(REPO, data_root))
    return 0


def record_case_errors(run: str, record: str, protocol: Protocol, data_root: str) -> None:
    """Add `tools/case_errors.py`'s counts (missed atrium, false positives by distance) to a fresh record, for each
    evaluation whose predictions the run folder holds; a failure is reported, never fatal to the record."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "case_errors.py")
    spec = importlib.util.spec_from_file_location("case_errors", path)
    case_errors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(case_errors)
    for evaluation, _ in protocol.evaluations:
        try:
            if case_errors.write_record_errors(run, record, evaluation, data_root):
                print(f"= {os.path.basename(record)}: case errors of eval-{evaluation} recorded", flush=True)
        except (Exception, SystemExit) as exc:  # the record itself is already complete
            print(f"! {os.path.basename(record)}: case errors of eval-{evaluation} not measured: {exc}", flush=True)


def run_rows(rows: list, protocol: Protocol, runs: str, data_root: str, sets: list, jobs: int = 1,
             seeds=None, threads: int | None = None) -> int:
    """Run rows in order, each with every seed (`seeds`, default the protocol's; all rows of a seed before the next
    seed, so a table of one seed fills first), `jobs` at a time; returns the first non-zero exit code, else 0.

    With jobs > 1 each run's TensorFlow gets cores // jobs threads (two one-thread runs side by side do 12-26 % more
    work on 2 cores than one two-thread run after the other) and its output goes to RUNS/<run>.log. `threads`, when
    given, sets that count instead (e.g. 1 for each of two `run` commands of different protocols side by side).
    """
    todo = [(row, seed) for seed in (seeds or protocol.seeds) for row in rows]
    if jobs == 1:
        for row, seed in todo:
            code = run_row(row, protocol, runs, data_root, sets, threads=threads, seed=seed)
            if code:
                return code
        return 0
    import threading

    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    pending, codes, lock = todo, [], threading.Lock()
    os.makedirs(os.path.join(REPO, runs), exist_ok=True)

    def lane():
        while True:
            with lock:
                if not pending:
                    return
                row, seed = pending.pop(0)
            name = run_name(row, seed)
            try:
                with open(os.path.join(REPO, runs, f"{name}.log"), "a", encoding="utf-8") as log:
                    code = run_row(row, protocol, runs, data_root, sets, threads=threads, log=log, seed=seed)
            except OSError as exc:  # a lane must report, not die silently with its row
                print(f"! {name}: {exc}", flush=True)
                code = 1
            with lock:
                codes.append(code)

    workers = [threading.Thread(target=lane, daemon=True) for _ in range(min(jobs, len(todo)))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return next((code for code in codes if code), 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "status", "table"])
    parser.add_argument("rows", nargs="*", help=f"rows for `run` (and to show for `status`): "
                                                f"{', '.join(ROW_BY_KEY)} (vnet_80: --protocol full only), or all")
    parser.add_argument("--protocol", choices=list(PROTOCOLS),
                        help="`run`: half (the paper's schedule, default), short (1/5 schedule), official (half's "
                             "schedule, scored on test.list, three seeds), full (the paper's full-resolution "
                             "protocol on test.list) or an ablation of official; `status`: only this protocol "
                             "(default every one)")
    parser.add_argument("--runs", help="`run`: folder of the run folders (default runs/la_<protocol>)")
    parser.add_argument("--data-root", default=DEFAULT_ROOT, help=f"LA dataset root (default {DEFAULT_ROOT})")
    parser.add_argument("--output", default="docs/RESULTS.md", help="`table`: the Markdown file written")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="`run`: config override passed to train.py (e.g. train.iterations=20 for a smoke run, "
                             "which is never recorded)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="`run`: rows trained at once, each on cores // jobs threads (default 1)")
    parser.add_argument("--threads", type=int,
                        help="`run`: TensorFlow threads of each run (default: all cores, or cores // jobs with "
                             "--jobs); 1 lets two `run` commands share 2 cores")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="`run`: the seeds to run (default: every seed of the protocol; only protocols with seeds)")
    args = parser.parse_intermixed_args(argv)  # rows may come after the options too
    protocol = PROTOCOLS[args.protocol or DEFAULT_PROTOCOL]
    # the protocols a command acts on: `status` without --protocol shows them all, every other command one
    chosen = list(PROTOCOLS.values()) if args.command == "status" and not args.protocol else [protocol]
    keys = list(dict.fromkeys(row.key for p in chosen for row in p.rows))
    if args.rows == ["all"]:
        args.rows = keys
    unknown = [r for r in args.rows if r not in keys]
    if unknown:
        where = f"--protocol {protocol.key}; its rows are" if len(chosen) == 1 else "any protocol; the rows are"
        parser.error(f"unknown row(s) {', '.join(unknown)} for {where} {', '.join(keys)}")
    if args.command == "run":
        if not args.rows:
            parser.error("run: name the rows to run")
        if not os.path.isdir(os.path.join(REPO, args.data_root)):  # commands run from the repository root
            parser.error(f"--data-root {args.data_root}: not a folder (the LA release with train.list)")
        if args.jobs < 1:
            parser.error(f"--jobs must be at least 1, got {args.jobs}")
        if args.threads is not None and args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        if args.seeds and protocol.seeds == (None,):
            parser.error(f"--seeds: protocol {protocol.key} has no seeds (its rows train with the config's seed); "
                         f"protocols with seeds: {', '.join(p.key for p in PROTOCOLS.values() if p.seeds != (None,))}")
        return run_rows([ROW_BY_KEY[key] for key in args.rows], protocol, args.runs or protocol.runs, args.data_root,
                        args.set, args.jobs, seeds=args.seeds, threads=args.threads)
    if args.command == "status":
        for p in chosen:
            for row in p.rows:
                if args.rows and row.key not in args.rows:
                    continue
                for seed in p.seeds:
                    iterations = row_config(row, p, seed).train.iterations
                    name = run_name(row, seed)
                    state, done = shown_state(os.path.join(REPO, p.records, name), os.path.join(REPO, p.runs, name),
                                              iterations, p.eval_dirs)
                    print(f"{p.key:16s} {name:20s} {_status(state, iterations)}" + (" (recorded)" if done else ""))
        return 0
    for p in PROTOCOLS.values():  # a run finished outside `run` (or before records existed) gets its record now
        for key in record_finished(p, os.path.join(REPO, p.runs), os.path.join(REPO, p.records)):
            print(f"recorded {p.key}/{key}")
    output = os.path.join(REPO, args.output)
    curves = {}
    for p in PROTOCOLS.values():
        path = os.path.join(os.path.dirname(output), "results", f"curves_{p.key}.png")
        if plot_curves(os.path.join(REPO, p.records), path):
            curves[p.key] = os.path.relpath(path, os.path.dirname(output))
    text = results_markdown(os.path.join(REPO, RECORDS), os.path.join(REPO, "runs"), args.data_root, curves)
    from sassnet_tf.utils.atomic import atomic_write_text

    atomic_write_text(output, text)
    print(f"wrote {output}" + "".join(f" and {path}" for path in curves.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
