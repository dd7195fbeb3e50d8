"""Whole-scan mode against the crop protocol: each LA case embedded in a larger field of view; prints JSON.

    python tools/whole_scan_check.py --model runs/la_official/vnet_16-seed1337 --weights last \
        --data-root ../shared/data/LA --list test.list [--canvas 576 576] [--output whole_scan.json]

The LA volumes are cropped around the atrium (REFERENCE.md); a user's scan is the whole 576x576 (or 640x640) field of
view. Each case is placed at a seeded random position in a canvas of that size (same slices), the rest filled with
noise of the case's own background statistics (mean and standard deviation outside the label), then segmented by
`Predictor.predict_whole_scan`; the same model's ordinary prediction on the crop (the paper's protocol) is the
reference. Reported per case and as means: Dice of both against the label, whether the box held the whole label, and
seconds per scan. The canvas background is noise, not anatomy: bright structures outside the crop (which a real scan
has) are absent, so this measures the mechanics and the cost, not robustness to other anatomy. The settings are the
defaults; nothing here is tuned on these scores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def embed(image: np.ndarray, label: np.ndarray, canvas_hw, rng) -> tuple:
    """(canvas image, canvas label, offset): the case at a random position, background noise elsewhere."""
    background = image[label == 0]
    shape = (max(canvas_hw[0], image.shape[0]), max(canvas_hw[1], image.shape[1]), image.shape[2])
    canvas = rng.normal(float(background.mean()), float(background.std()), size=shape).astype(np.float32)
    canvas_label = np.zeros(shape, np.uint8)
    offset = [int(rng.integers(0, shape[a] - image.shape[a] + 1)) for a in range(2)] + [0]
    region = tuple(slice(o, o + n) for o, n in zip(offset, image.shape))
    canvas[region] = image
    canvas_label[region] = label
    return canvas, canvas_label, offset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", choices=("best", "last"), default="last")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--list", default="test.list")
    parser.add_argument("--canvas", type=int, nargs=2, default=(576, 576), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=int, help="Predictor.predict_whole_scan margin (default: its own)")
    parser.add_argument("--coarse-overlap", type=float, default=0.0, help="Predictor.predict_whole_scan's (0)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)

    from sassnet_tf.data.dataset_layout import open_dataset
    from sassnet_tf.inference.predictor import Predictor
    from sassnet_tf.metrics import case_metrics
    from sassnet_tf.utils.atomic import atomic_write_text
    from sassnet_tf.utils.runtime import cpu_info

    predictor = Predictor.from_path(args.model, weights=args.weights)
    predictor.segment_fn()
    layout = open_dataset(args.data_root)
    rng = np.random.default_rng(args.seed)
    rows = []
    for case_id in layout.read_list(args.list):
        case = layout.load(case_id)
        tick = time.perf_counter()
        crop = predictor.predict(case.image)["label"]
        crop_seconds = time.perf_counter() - tick
        canvas, canvas_label, offset = embed(case.image, case.label, args.canvas, rng)
        tick = time.perf_counter()
        whole = predictor.predict_whole_scan(canvas, margin=args.margin, coarse_overlap=args.coarse_overlap)
        whole_seconds = time.perf_counter() - tick
        box = whole["box"]
        coords = np.argwhere(canvas_label)
        inside = bool(len(coords)) and all(a <= lo and hi < b for (a, b), lo, hi in
                                           zip(box, coords.min(axis=0), coords.max(axis=0)))
        row = {"case": case_id, "shape": list(case.image.shape), "canvas": list(canvas.shape),
               "dice_crop": case_metrics(crop, case.label)["dice"],
               "dice_whole_scan": case_metrics(whole["label"], canvas_label)["dice"],
               "box_holds_the_label": inside, "seconds_crop": round(crop_seconds, 2),
               "seconds_whole_scan": round(whole_seconds, 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    means = {k: float(np.mean([r[k] for r in rows])) for k in ("dice_crop", "dice_whole_scan", "seconds_crop",
                                                               "seconds_whole_scan")}
    name, flags = cpu_info()
    report = {"cpu_model": f"{name} ({' '.join(sorted(flags & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16'}))})",
              "model": predictor.description, "settings": predictor.settings.to_metadata(), "list": args.list,
              "canvas": list(args.canvas), "margin": args.margin, "coarse_overlap": args.coarse_overlap,
              "cases": len(rows), "means": means,
              "box_held_the_label": sum(r["box_holds_the_label"] for r in rows), "per_case": rows}
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.output:
        atomic_write_text(args.output, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
