"""How recorded LA rows go wrong: false-positive and false-negative voxels per case, relative to the atrium.

    python tools/case_errors.py [--runs runs/la_official] [--records docs/results/la_official] [--evaluation test]
        [--data-root ../shared/data/LA] [--json out.json]

Dice alone does not say whether a row misses atrium or segments too much, nor where the extra voxels lie. For every
recorded run (a record `<records>/<run>` whose run folder `<runs>/<run>` still holds the evaluation's predictions,
`eval-<evaluation>/predictions/<case>.nii.gz`), each case's prediction is compared with its label: atrium voxels,
missed atrium voxels (false negatives), and false positives split by their distance from the atrium (within 3
voxels: the boundary; beyond 10: a leak into another structure or a stray blob) and by whether they lie outside
the prediction's largest connected component (what the "+NMS" filter removes), and how bright the far false
positives are against the atrium (blood pool ~1, background tissue ~0.4). The counts are written beside the
record's per-case metrics (`<record>/eval-<evaluation>/case_errors.csv`, kept when run folders are gone), and the
summary -- each row's mean over cases and recorded seeds, as fractions of the atrium's volume -- is read from the
records only. An analysis of finished results (test.list rules, REFERENCE.md): it chooses no setting.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # tools.records and sassnet_tf from this checkout

from tools.records import LA_ROOT, default_la_root, recorded_files  # noqa: E402

CSV = "case_errors.csv"
NEAR, FAR = 3, 10  # voxels from the atrium: a boundary error / a leak or stray blob
COUNTS = ("atrium", "false_negative", "false_positive", "fp_within_3", "fp_beyond_10", "outside_largest_component")
# mean image intensity over the false positives beyond 10 voxels, over the atrium's: ~1 = as bright as the blood pool
BRIGHTNESS = "fp_beyond_10_brightness"


def measure(prediction, label, image=None) -> dict:
    """Voxel counts (`COUNTS`) of one binary prediction against its binary label (same shape); with the `image`, also
    `BRIGHTNESS` (None without far false positives or atrium)."""
    import numpy as np
    from scipy import ndimage

    from sassnet_tf.inference.postprocess import largest_connected_component

    prediction, label = np.asarray(prediction) > 0, np.asarray(label) > 0
    if prediction.shape != label.shape:
        raise ValueError(f"prediction shape {prediction.shape} != label shape {label.shape}")
    false_positive = prediction & ~label
    # distance of every voxel to the nearest atrium voxel (everything is far from an empty label)
    distance = ndimage.distance_transform_edt(~label) if label.any() else np.full(label.shape, np.inf)
    # what the "+NMS" filter removes: the evaluation's own filter (26-connected components, as the reference)
    outside = int(prediction.sum()) - int(largest_connected_component(prediction).sum())
    far = false_positive & (distance > FAR)
    counts = {"atrium": int(label.sum()), "false_negative": int((label & ~prediction).sum()),
              "false_positive": int(false_positive.sum()),
              "fp_within_3": int((false_positive & (distance <= NEAR)).sum()), "fp_beyond_10": int(far.sum()),
              "outside_largest_component": outside}
    if image is not None:
        image = np.asarray(image, np.float64)
        atrium = image[label].mean() if label.any() else 0.0
        counts[BRIGHTNESS] = float(image[far].mean() / atrium) if far.any() and atrium > 0 else None
    return counts


def write_record_errors(run: str, record: str, evaluation: str, data_root: str) -> bool:
    """Measure every case the run's evaluation predicted and write `<record>/eval-<evaluation>/case_errors.csv`
    (atomically); False when the run folder has no predictions for it."""
    import nibabel as nib
    import numpy as np

    from sassnet_tf.data.dataset_layout import open_dataset
    from sassnet_tf.utils.atomic import atomic_write_text

    predictions = os.path.join(run, f"eval-{evaluation}", "predictions")
    per_case = os.path.join(record, f"eval-{evaluation}", "per_case.csv")
    if not os.path.isdir(predictions) or not os.path.isfile(per_case):
        return False
    with open(per_case, newline="", encoding="utf-8") as fh:
        cases = [line["case"] for line in csv.DictReader(fh)]
    layout = open_dataset(data_root)
    lines = [",".join(("case",) + COUNTS + (BRIGHTNESS,))]
    for case in cases:
        path = os.path.join(predictions, f"{case}.nii.gz")
        if not os.path.isfile(path):
            raise SystemExit(f"{path}: missing; the record {record} lists case {case}")
        prediction = np.asanyarray(nib.load(path).dataobj)
        loaded = layout.load(case)
        counts = measure(prediction, loaded.label, loaded.image)
        brightness = "" if counts[BRIGHTNESS] is None else f"{counts[BRIGHTNESS]:.4f}"
        lines.append(",".join([case] + [str(counts[k]) for k in COUNTS] + [brightness]))
    atomic_write_text(os.path.join(record, f"eval-{evaluation}", CSV), "\n".join(lines) + "\n")
    return True


def summarise(records: str, evaluation: str) -> dict:
    """{row: {"seeds": n, "cases": n, <count>: mean over cases and seeds of count / atrium, BRIGHTNESS: its mean
    weighted by each case's far false positives}} from the records."""
    rows = {}
    for row, run, path in recorded_files(records, f"eval-{evaluation}", CSV):
        with open(path, newline="", encoding="utf-8") as fh:
            lines = [line for line in csv.DictReader(fh) if int(line["atrium"]) > 0]
        entry = rows.setdefault(row, {"runs": [], "fractions": [], "bright": []})
        entry["runs"].append(run)
        entry["fractions"] += [{k: int(line[k]) / int(line["atrium"]) for k in COUNTS[1:]} for line in lines]
        entry["bright"] += [(float(line[BRIGHTNESS]), int(line["fp_beyond_10"])) for line in lines
                            if line.get(BRIGHTNESS)]
    summary = {}
    for row, e in rows.items():
        if not e["fractions"]:
            continue
        weight = sum(n for _, n in e["bright"])
        summary[row] = {"seeds": len(e["runs"]), "cases": len(e["fractions"]),
                        **{k: round(statistics.mean(f[k] for f in e["fractions"]), 4) for k in COUNTS[1:]},
                        BRIGHTNESS: round(sum(b * n for b, n in e["bright"]) / weight, 3) if weight else None}
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/la_official", help="run folders (with the evaluations' predictions)")
    parser.add_argument("--records", default="docs/results/la_official")
    parser.add_argument("--evaluation", default="test", help="the eval-<name> folder of each run and record")
    parser.add_argument("--data-root", default=default_la_root(), help=f"the labels (the LA release; default {LA_ROOT})")
    parser.add_argument("--json", help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.records):
        parser.error(f"--records {args.records}: not a folder")
    measured = []
    if os.path.isdir(args.runs):
        if not os.path.isdir(args.data_root):
            parser.error(f"--data-root {args.data_root}: not a folder (the LA release, for the labels)")
        for record in sorted(glob.glob(os.path.join(args.records, "*", ""))):
            name = os.path.basename(os.path.dirname(record))
            if write_record_errors(os.path.join(args.runs, name), record, args.evaluation, args.data_root):
                measured.append(name)
    print(f"measured from run folders: {', '.join(measured) or 'none (summary from the records)'}")
    summary = summarise(args.records, args.evaluation)
    if not summary:
        raise SystemExit(f"{args.records}: no record has eval-{args.evaluation}/{CSV}")
    print(f"Mean over cases and recorded seeds, as fractions of the atrium's volume (`eval-{args.evaluation}`)")
    print("| row | seeds | missed atrium (FN) | false positives | FP within 3 voxels | FP beyond 10 voxels "
          "| outside the largest component | brightness of FP beyond 10 voxels / atrium's |")
    print("|---" * 8 + "|")
    for row, s in sorted(summary.items()):
        print(f"| {row} | {s['seeds']} | {s['false_negative']:.3f} | {s['false_positive']:.3f} | "
              f"{s['fp_within_3']:.3f} | {s['fp_beyond_10']:.3f} | {s['outside_largest_component']:.3f} | "
              + ("–" if s[BRIGHTNESS] is None else f"{s[BRIGHTNESS]:.2f}") + " |")
    if args.json:
        from sassnet_tf.utils.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps({"records": args.records, "evaluation": args.evaluation,
                                                 "rows": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
