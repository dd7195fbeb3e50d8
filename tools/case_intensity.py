"""Per-case Dice of recorded LA rows beside each case's intensity: where does SASSNet gain or lose against V-Net?

    python tools/case_intensity.py [--records docs/results/la_official] [--evaluation test] [--list test.list]
        [--data-root ../shared/data/LA] [--json out.json]

For every case of the list: the image's standard deviation and the mean intensity inside its atrium label (the LA
release z-scored each raw scan before cropping, so a dark atrium marks a scan unlike the typical one, findings.md),
then each recorded row's Dice on that case, averaged over the row's recorded seeds, and SASSNet minus V-Net at equal
labels. Cases are sorted by atrium intensity; the last lines give the Pearson correlation of atrium intensity with
each SASSNet-minus-V-Net difference. It reads only finished records (docs/results) and the images: an analysis of
results already in the table, never a way to choose a setting (test.list rules, REFERENCE.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # tools.records and sassnet_tf from this checkout

from tools.records import LA_ROOT, default_la_root, recorded_files  # noqa: E402


def recorded_dice(records: str, evaluation: str) -> dict:
    """{row key: {case: [Dice % of each recorded seed]}} from `<records>/<row>[-seed<S>]/eval-<evaluation>`."""
    rows = {}
    for row, _run, path in recorded_files(records, f"eval-{evaluation}", "per_case.csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            for line in csv.DictReader(fh):
                rows.setdefault(row, {}).setdefault(line["case"], []).append(100.0 * float(line["dice"]))
    return rows


def case_intensity(data_root: str, case: str) -> tuple:
    """(image std, mean image value inside the label) of one LA case."""
    import numpy as np

    from sassnet_tf.data.dataset_layout import open_dataset

    loaded = open_dataset(data_root).load(case)
    image, label = np.asarray(loaded.image, np.float64), np.asarray(loaded.label) > 0
    return float(image.std()), float(image[label].mean()) if label.any() else float("nan")


def pearson(xs: list, ys: list) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / (sxx * syy) ** 0.5 if sxx and syy else None


def analyse(records: str, evaluation: str, list_file: str, data_root: str) -> dict:
    dice = recorded_dice(records, evaluation)
    if not dice:
        raise SystemExit(f"{records}: no recorded run has eval-{evaluation}/per_case.csv")
    from sassnet_tf.data.dataset_layout import open_dataset

    cases = open_dataset(data_root).read_list(list_file)
    pairs = [(f"sassnet_{n}", f"vnet_{n}") for n in (8, 16) if f"sassnet_{n}" in dice and f"vnet_{n}" in dice]
    table = []
    for case in cases:
        std, atrium = case_intensity(data_root, case)
        means = {row: statistics.mean(per_case[case]) for row, per_case in dice.items() if case in per_case}
        gains = {f"{s} - {v}": means[s] - means[v] for s, v in pairs if s in means and v in means}
        table.append({"case": case, "image_std": round(std, 3), "atrium_mean": round(atrium, 3),
                      "dice": {k: round(v, 2) for k, v in means.items()},
                      "gain": {k: round(v, 2) for k, v in gains.items()}})
    table.sort(key=lambda r: r["atrium_mean"])
    correlations = {}
    for s, v in pairs:
        key = f"{s} - {v}"
        points = [(r["atrium_mean"], r["gain"][key]) for r in table if key in r["gain"]]
        r = pearson([p[0] for p in points], [p[1] for p in points])
        correlations[key] = None if r is None else round(r, 2)
    seeds = {row: max(len(v) for v in per_case.values()) for row, per_case in dice.items()}
    return {"records": records, "evaluation": evaluation, "list": list_file, "seeds_per_row": seeds,
            "cases": table, "correlation_atrium_mean_vs_gain": correlations}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="docs/results/la_official")
    parser.add_argument("--evaluation", default="test", help="the eval-<name> folder of each record")
    parser.add_argument("--list", default="test.list", help="the cases' list file (relative to the data root)")
    parser.add_argument("--data-root", default=default_la_root(), help=f"the LA release (default {LA_ROOT})")
    parser.add_argument("--json", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_root):
        parser.error(f"--data-root {args.data_root}: not a folder (the LA release)")
    result = analyse(args.records, args.evaluation, args.list, args.data_root)
    rows = sorted({row for r in result["cases"] for row in r["dice"]})
    gains = sorted({g for r in result["cases"] for g in r["gain"]})
    print(f"Dice % per case (mean over recorded seeds: {result['seeds_per_row']}), sorted by atrium intensity")
    print("| case | atrium mean | image std | " + " | ".join(rows + gains) + " |")
    print("|---" * (3 + len(rows) + len(gains)) + "|")
    for r in result["cases"]:
        cells = [f"{r['dice'].get(k, float('nan')):.1f}" for k in rows] + [f"{r['gain'].get(k, float('nan')):+.1f}"
                                                                         for k in gains]
        print(f"| `{r['case']}` | {r['atrium_mean']:.2f} | {r['image_std']:.2f} | " + " | ".join(cells) + " |")
    for key, value in result["correlation_atrium_mean_vs_gain"].items():
        print(f"Pearson r(atrium mean, {key}) = {value}")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
