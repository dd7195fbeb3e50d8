"""Run and publish the "LA half resolution" results table (docs/RESULTS.md), one resumable command per row.

    python tools/la_results.py run sassnet_8      # train (resuming if the run exists), then evaluate
    python tools/la_results.py run all            # every row in table order, each resumed where it stopped
    python tools/la_results.py run all --jobs 2   # two rows at a time, one thread each (~15 % more work done)
    python tools/la_results.py status             # iteration and state of every row
    python tools/la_results.py table              # rewrite docs/RESULTS.md and docs/results/curves.png

Each row trains `configs/<row config>` into `runs/la_half/<row>` (`--resume` when the run folder exists, so a
stopped session loses at most `train.checkpoint_every` iterations), then evaluates the last weights on the 10
held-out cases of `configs/lists/la_eval10.list`, with and without the largest-component filter ("NMS"). `table`
only reads run folders: rows not trained yet are listed as such, never filled with numbers.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_LIST = "configs/lists/la_eval10.list"
DEFAULT_ROOT = "../shared/data/LA"
DEFAULT_RUNS = "runs/la_half"
FINDINGS = "docs/results/findings.md"
CURVE_TAGS = ("train/loss", "train/dice_loss", "train/sdm_loss", "train/d_loss")


@dataclass(frozen=True)
class Row:
    key: str
    method: str
    labeled: int
    unlabeled: int
    config: str
    paper: tuple  # Dice %, Jaccard %, ASD, 95HD of the paper's Tables 1-2 (full resolution, official test split)


ROWS = (
    Row("vnet_8", "V-Net", 8, 0, "configs/la_vnet_8labeled_half.yaml", (79.99, 68.12, 5.48, 21.11)),
    Row("vnet_sdm_8", "V-Net + SDM", 8, 0, "configs/la_vnet_sdm_8labeled_half.yaml", (81.12, 69.75, 6.93, 25.58)),
    Row("sassnet_8", "SASSNet", 8, 72, "configs/la_8labeled_half.yaml", (86.81, 76.92, 3.94, 12.54)),
    Row("vnet_16", "V-Net", 16, 0, "configs/la_vnet_16labeled_half.yaml", (86.03, 76.06, 3.51, 14.26)),
    Row("sassnet_16", "SASSNet", 16, 64, "configs/la_16labeled_half.yaml", (89.27, 80.82, 3.13, 8.83)),
)
ROW_BY_KEY = {row.key: row for row in ROWS}


EVAL_DIRS = ("eval-la_eval10", "eval-la_eval10-nms")  # without / with the largest-component filter


def row_steps(row: Row, runs: str, data_root: str, python: str = "python", extra=()) -> list:
    """(argv, evaluation folder or None) of each step `run` executes for a row: train, evaluate, evaluate + NMS."""
    run = f"{runs}/{row.key}"
    train = [python, "train.py", "--config", row.config, "--data-root", data_root, "--output", run, "--no-progress",
             *extra]
    evaluate = [python, "-m", "sassnet_tf.evaluate", "--model", run, "--weights", "last", "--list", EVAL_LIST,
                "--no-png"]
    return [(train, None), (evaluate + ["--output", f"{run}/{EVAL_DIRS[0]}"], EVAL_DIRS[0]),
            (evaluate + ["--nms", "--output", f"{run}/{EVAL_DIRS[1]}"], EVAL_DIRS[1])]


def row_commands(row: Row, runs: str = DEFAULT_RUNS, data_root: str = DEFAULT_ROOT) -> list:
    """The shell commands `run` executes for a row (printed in RESULTS.md)."""
    commands = [" ".join(argv) for argv, _ in row_steps(row, runs, data_root)]
    commands[0] += " [--resume]"
    return commands


def read_json(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def row_state(row: Row, runs: str) -> dict:
    """What the run folder of a row holds: run.json state and the two evaluation summaries (None if absent)."""
    run = os.path.join(runs, row.key)
    return {"run": read_json(os.path.join(run, "run.json")),
            "eval": read_json(os.path.join(run, EVAL_DIRS[0], "summary.json")),
            "eval_nms": read_json(os.path.join(run, EVAL_DIRS[1], "summary.json"))}


def _metrics(summary) -> str:
    if not summary:
        return "| – | – | – | – "
    t = summary["paper_table"]
    return f"| {t['Dice (%)']:.2f} | {t['Jaccard (%)']:.2f} | {t['ASD (voxel)']:.2f} | {t['95HD (voxel)']:.2f} "


def is_done(state: dict, iterations: int) -> bool:
    """A row counts only once its run completed the protocol's iterations (not a shortened smoke run) and was
    evaluated."""
    run = state["run"] or {}
    return run.get("status") == "completed" and run.get("iteration", 0) >= iterations and bool(state["eval"])


def _status(state: dict, iterations: int) -> str:
    run = state["run"]
    if run is None:
        return "not started"
    it = run.get("iteration", 0)
    hours = (run.get("train_seconds") or 0) / 3600
    if is_done(state, iterations):
        return f"done, {hours:.1f} h training"
    return f"{run.get('status', '?')}: iteration {it} of {iterations}, {hours:.1f} h so far"


def results_markdown(runs_path: str, runs: str = DEFAULT_RUNS, data_root: str = DEFAULT_ROOT,
                     curves: str | None = None) -> str:
    """RESULTS.md: our numbers beside the paper's, commands, cases, seeds, wall time; only what run folders hold.

    Args:
        runs_path: the folder holding the run folders; `runs` is how commands name it.
    """
    sys.path.insert(0, REPO)
    from sassnet_tf.config import load_config

    with open(os.path.join(REPO, EVAL_LIST), encoding="utf-8") as fh:
        cases = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    lines = [
        "# LA results: half-resolution protocol",
        "",
        f"Snapshot of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Generated by "
        "`python tools/la_results.py table` from the run folders under `" + runs + "`; a row shows",
        "numbers only once its run has finished and been evaluated. Protocol (\"LA half resolution\", issue 7): every",
        "volume downsampled by 2 per axis (image by linear tent filtering, label by thresholded averaging), patch",
        "64x64x48 (the 56x56x40 of the issue rounded up to multiples of 16, which the 4-level V-Net needs; the 44",
        "slices are zero-padded to 48), stride 9/9/2, the paper's",
        "6000 iterations, learning-rate steps and w(t) ramp; probabilities upsampled to full resolution before",
        "thresholding, so Dice/Jaccard/95HD/ASD (voxels, medpy definitions) are on the original grid like the paper's.",
        "Training: labeled = first N IDs of `train.list`, the other 80 - N unlabeled (SASSNet only; V-Net rows use",
        "the labeled cases alone). Evaluation: the last weights on the 10 cases of `" + EVAL_LIST + "`,",
        "unlabeled in every row, so no run saw their labels (SASSNet rows saw their images, as in the paper's",
        "transductive setting). The paper's numbers are on the 20 withheld test volumes at full resolution.",
        "Training times are wall time, float32, summed over the sessions a run spanned; a row run beside another",
        "(`--jobs 2`, one thread each) takes ~1.7x the wall time of a row alone on 2 cores (SASSNet 8.5 s vs 4.9 s,",
        "V-Net 2.4 s vs 1.4 s per iteration, docs/PERFORMANCE.md); the findings below say how these rows ran.",
        "",
        "| Method | Labeled | Unlabeled | Dice % | Jaccard % | ASD | 95HD | paper Dice | paper Jaccard | paper ASD "
        "| paper 95HD | seed | state |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nms_lines = ["| Method | Labeled | Dice % | Jaccard % | ASD | 95HD |", "|---|---|---|---|---|---|"]
    finished = []
    for row in ROWS:
        config = load_config(os.path.join(REPO, row.config))
        state = row_state(row, runs_path)
        paper = "".join(f"| {v:.2f} " for v in row.paper)
        done = is_done(state, config.train.iterations)
        lines.append(f"| {row.method} | {row.labeled} | {row.unlabeled} {_metrics(done and state['eval'])}{paper}"
                     f"| {config.train.seed} | {_status(state, config.train.iterations)} |")
        nms_lines.append(f"| {row.method} | {row.labeled} {_metrics(done and state['eval_nms'])}|")
        if done:
            finished.append(row)
    lines += ["", "With the largest connected component kept (\"+NMS\"):", "", *nms_lines, "", "## Commands",
              "", "One command per row (`run` executes the three lines below it, adding `--resume` when the run "
              "folder exists):", ""]
    for row in ROWS:
        lines += [f"- {row.method}, {row.labeled} labeled: `python tools/la_results.py run {row.key}`", "",
                  "  ```", *[f"  {c}" for c in row_commands(row, runs, data_root)], "  ```", ""]
    lines += ["`python tools/la_results.py run all` runs every row in turn; `run all --jobs 2` two rows at a time, each "
              "with `--threads 1` (the same results up to float rounding order, ~15 % more work per hour on 2 cores).",
              "", *per_case_section(finished, runs_path, cases), "## Evaluation cases", "", ", ".join(f"`{c}`" for c in cases), "",
              "## Scoring the official test split", "",
              "The 20 volumes of `test.list` are not distributed with this repository's data. With them in the same "
              "LA layout, score any row's weights with the paper's protocol:", "", "```",
              *[f"python -m sassnet_tf.evaluate --model {runs}/<row> --weights last --data-root <LA root with the "
                f"test volumes> --list test.list{nms} --output {runs}/<row>/eval-test{nms.replace(' --', '-')}"
                for nms in ("", " --nms")],
              "```", ""]
    findings = os.path.join(REPO, FINDINGS)
    if os.path.isfile(findings):  # hand-written analysis, kept across regenerations
        with open(findings, encoding="utf-8") as fh:
            lines += ["## Findings", "", f"(from `{FINDINGS}`)", "", fh.read().strip(), ""]
    if curves:
        lines += ["## Training curves", "", f"![training curves]({curves})", ""]
    return "\n".join(lines)


def per_case_dice(summary_dir: str) -> dict:
    """{case: Dice %} from an evaluation's per_case.csv ({} when absent)."""
    try:
        with open(os.path.join(summary_dir, "per_case.csv"), encoding="utf-8", newline="") as fh:
            return {r["case"]: 100 * float(r["dice"]) for r in csv.DictReader(fh)}
    except (OSError, KeyError, ValueError):
        return {}


def per_case_section(finished: list, runs_path: str, cases: list) -> list:
    """Markdown lines: Dice % of each finished row on every evaluation case (no NMS), to compare rows case by case."""
    if not finished:
        return []
    columns = [(f"{row.method} ({row.labeled})", per_case_dice(os.path.join(runs_path, row.key, EVAL_DIRS[0])))
               for row in finished]
    lines = ["## Dice per evaluation case", "", "Dice % without NMS, finished rows only.", "",
             "| case | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for case in cases:
        lines.append(f"| `{case}` | " + " | ".join(f"{d[case]:.2f}" if case in d else "–" for _, d in columns) + " |")
    return lines + [""]


def read_scalars(logdir: str, tags=CURVE_TAGS) -> dict:
    """{tag: [(step, value), ...]} from the TensorBoard event files of a run (tf.summary scalars)."""
    import tensorflow as tf

    out = {tag: [] for tag in tags}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag in out:
                    out[value.tag].append((event.step, float(tf.make_ndarray(value.tensor))))
    return {tag: sorted(dict(points).items()) for tag, points in out.items()}  # a resumed run rewrites steps


def plot_curves(runs: str, path: str) -> bool:
    """One panel per tag, one line per row that has logs; False when no row has any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {row.key: read_scalars(os.path.join(runs, row.key, "logs")) for row in ROWS}
    if not any(points for tags in series.values() for points in tags.values()):
        return False
    fig, axes = plt.subplots(1, len(CURVE_TAGS), figsize=(4 * len(CURVE_TAGS), 3.2))
    for ax, tag in zip(axes, CURVE_TAGS):
        for row in ROWS:
            points = series[row.key][tag]
            if points:
                ax.plot(*zip(*points), label=f"{row.method} ({row.labeled})", linewidth=1)
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


def run_row(row: Row, runs: str, data_root: str, extra: list, threads: int | None = None, log=None) -> int:
    """Train (resuming) then evaluate one row; returns the first non-zero exit code, else 0.

    Commands run from the repository root, so `runs` and `data_root` are taken relative to it (or absolute).
    `threads` is passed to every step as `--threads`; `log` (an open file) receives the steps' output.
    """
    run = os.path.join(REPO, runs, row.key)
    weights = os.path.join(run, "weights", "vnet_last.weights.h5")
    for argv, eval_dir in row_steps(row, runs, data_root, python=sys.executable, extra=extra):
        if eval_dir is None and os.path.isfile(os.path.join(run, "run.json")):
            argv = argv + ["--resume"]
        if threads is not None:
            argv = argv + ["--threads", str(threads)]
        summary = eval_dir and os.path.join(run, eval_dir, "summary.json")
        if summary and os.path.isfile(summary) and os.path.getmtime(summary) > os.path.getmtime(weights):
            print(f"= {summary} is newer than the weights: evaluation kept", flush=True)
            continue
        print("+", " ".join(argv) + (f"  (output: {log.name})" if log else ""), flush=True)
        code = subprocess.call(argv, cwd=REPO, stdout=log, stderr=log and subprocess.STDOUT)
        if code:
            print(f"! {row.key}: exit code {code}", flush=True)
            return code
    return 0


def run_rows(rows: list, runs: str, data_root: str, extra: list, jobs: int = 1) -> int:
    """Run rows in order, `jobs` at a time; returns the first non-zero exit code, else 0.

    With jobs > 1 each row's TensorFlow gets cores // jobs threads (two one-thread runs side by side do ~15 % more
    work on 2 cores than one two-thread run after the other) and its output goes to RUNS/<row>.log.
    """
    if jobs == 1:
        for row in rows:
            code = run_row(row, runs, data_root, extra)
            if code:
                return code
        return 0
    import threading

    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending, codes, lock = list(rows), [], threading.Lock()
    os.makedirs(os.path.join(REPO, runs), exist_ok=True)

    def lane():
        while True:
            with lock:
                if not pending:
                    return
                row = pending.pop(0)
            try:
                with open(os.path.join(REPO, runs, f"{row.key}.log"), "a", encoding="utf-8") as log:
                    code = run_row(row, runs, data_root, extra, threads=threads, log=log)
            except OSError as exc:  # a lane must report, not die silently with its row
                print(f"! {row.key}: {exc}", flush=True)
                code = 1
            with lock:
                codes.append(code)

    workers = [threading.Thread(target=lane, daemon=True) for _ in range(min(jobs, len(rows)))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return next((code for code in codes if code), 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "status", "table"])
    parser.add_argument("rows", nargs="*", help=f"rows for `run`: {', '.join(ROW_BY_KEY)}, or all")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"folder of the run folders (default {DEFAULT_RUNS})")
    parser.add_argument("--data-root", default=DEFAULT_ROOT, help=f"LA dataset root (default {DEFAULT_ROOT})")
    parser.add_argument("--output", default="docs/RESULTS.md", help="`table`: the Markdown file written")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="`run`: config override passed to train.py (e.g. train.iterations=20 for a smoke run)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="`run`: rows trained at once, each on cores // jobs threads (default 1)")
    args = parser.parse_args(argv)
    if args.rows == ["all"]:
        args.rows = list(ROW_BY_KEY)
    unknown = [r for r in args.rows if r not in ROW_BY_KEY]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; rows are {', '.join(ROW_BY_KEY)}")
    if args.command == "run":
        if not args.rows:
            parser.error("run: name the rows to run")
        if not os.path.isdir(os.path.join(REPO, args.data_root)):  # commands run from the repository root
            parser.error(f"--data-root {args.data_root}: not a folder (the LA release with train.list)")
        if args.jobs < 1:
            parser.error(f"--jobs must be at least 1, got {args.jobs}")
        extra = [a for s in args.set for a in ("--set", s)]
        return run_rows([ROW_BY_KEY[key] for key in args.rows], args.runs, args.data_root, extra, args.jobs)
    runs = os.path.join(REPO, args.runs)
    if args.command == "status":
        sys.path.insert(0, REPO)
        from sassnet_tf.config import load_config

        for row in ROWS:
            iterations = load_config(os.path.join(REPO, row.config)).train.iterations
            print(f"{row.key:12s} {_status(row_state(row, runs), iterations)}")
        return 0
    output = os.path.join(REPO, args.output)
    curves_path = os.path.join(os.path.dirname(output), "results", "curves.png")
    has_curves = plot_curves(runs, curves_path)
    text = results_markdown(runs, args.runs, args.data_root,
                            os.path.relpath(curves_path, os.path.dirname(output)) if has_curves else None)
    sys.path.insert(0, REPO)
    from sassnet_tf.utils.atomic import atomic_write_text

    atomic_write_text(output, text)
    print(f"wrote {output}" + (f" and {curves_path}" if has_curves else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
