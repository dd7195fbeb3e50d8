"""Whole-scan mode against the crop protocol on scans with a whole field of view; prints JSON.

    # LA cases pasted into phantom scans of 576x576 (the LA release's field of view)
    python tools/whole_scan_check.py --model runs/la_official/vnet_16-seed1337 --weights last \
        --data-root ../shared/data/LA --list configs/lists/la_eval10.list [--output whole_scan.json]
    # phantom scans rendered with their whole field of view, the crop being the dataset's test case
    python tools/whole_scan_check.py --model PHANTOM_RUN --phantom-cases 8

The LA volumes are cropped around the atrium (REFERENCE.md); a user's scan is the whole 576x576 (or 640x640) field of
view, which no model trained on LA has seen. Two ways to build such scans here, neither of them a real one:
- `--phantom-cases N`: the phantom generator's test cases (`sassnet_tf.data.phantom`, the demo's data) rendered with
  `field_of_view`: the same anatomy, with the heart's bright neighbours continued beyond the crop, more fat and lung,
  a body outline with a bright subcutaneous fat layer, air outside. The crop protocol's reference is the dataset's
  own (cropped) test case.
- LA cases (`--data-root`, `--list`) pasted into a scan: `--fill phantom` (default) a phantom whole-field scan whose
  own cropped region (its atrium and neighbours) is covered by the LA case; `--fill noise` the canvas is white noise
  of the case's background statistics (a stress test: nothing like a scan, every model fires on it).
The model's ordinary prediction on the crop (the paper's protocol) is the reference. Reported per case and as means:
Dice of both against the label, whether the fine box held the whole label, seconds per scan. Settings default to
`Predictor.predict_whole_scan`'s; choose them on a development list (configs/lists/la_eval10.list), never test.list.
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


def embed(image: np.ndarray, label: np.ndarray, canvas_hw, rng, fill: str = "noise", phantom_seed=0) -> tuple:
    """(canvas image, canvas label, offset): the case pasted into a larger scan.

    fill "noise": a canvas of white noise with the case's background mean and std, the case at a random place.
    fill "phantom": a phantom scan with that field of view (`phantom_case(field_of_view=...)`, seed `phantom_seed`),
    its cropped region (about 0.8 of the case's size) covered by the case, centred on it.
    """
    shape = (max(canvas_hw[0], image.shape[0]), max(canvas_hw[1], image.shape[1]), image.shape[2])
    canvas_label = np.zeros(shape, np.uint8)
    if fill == "noise":
        background = image[label == 0]
        canvas = rng.normal(float(background.mean()), float(background.std()), size=shape).astype(np.float32)
        offset = [int(rng.integers(0, shape[a] - image.shape[a] + 1)) for a in range(2)] + [0]
    elif fill == "phantom":
        from sassnet_tf.data.phantom import phantom_case

        inner = (max(8, int(0.8 * image.shape[0])), max(8, int(0.8 * image.shape[1])), max(8, image.shape[2]))
        canvas, _, parts = phantom_case(inner, seed=phantom_seed, return_parts=True, field_of_view=shape[:2])
        centre = [(a + b) / 2 for a, b in parts["crop"][:2]]
        offset = [int(np.clip(round(c - n / 2), 0, s - n)) for c, n, s in zip(centre, image.shape, shape)] + [0]
    else:
        raise ValueError(f"fill: expected 'noise' or 'phantom', got {fill!r}")
    region = tuple(slice(o, o + n) for o, n in zip(offset, image.shape))
    canvas[region] = image
    canvas_label[region] = label
    return canvas, canvas_label, offset


def _box_holds(box, label) -> bool:
    coords = np.argwhere(label)
    return bool(len(coords)) and all(a <= lo and hi < b for (a, b), lo, hi in
                                     zip(box, coords.min(axis=0), coords.max(axis=0)))


def _cases(args, rng):
    """(case id, crop image, crop label, whole image, whole label) per case."""
    if args.phantom_cases:
        from sassnet_tf.data.phantom import phantom_case

        for i in range(args.phantom_cases):
            seed = (args.phantom_seed, 1, i)  # the phantom dataset's test split: (dataset seed, 1, index)
            crop_image, crop_label = phantom_case(args.phantom_shape, seed=seed)
            whole_image, whole_label = phantom_case(args.phantom_shape, seed=seed, field_of_view=args.canvas)
            yield f"phantom-test-{i:03d}", crop_image, crop_label, whole_image, whole_label
        return
    from sassnet_tf.data.dataset_layout import open_dataset

    layout = open_dataset(args.data_root)
    for i, case_id in enumerate(layout.read_list(args.list)):
        case = layout.load(case_id)
        canvas, canvas_label, _ = embed(case.image, case.label, args.canvas, rng, fill=args.fill,
                                        phantom_seed=(args.seed, 2, i))
        yield case_id, case.image, case.label, canvas, canvas_label


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", choices=("best", "last"), default="last")
    parser.add_argument("--data-root", help="an LA-layout dataset (with --list)")
    parser.add_argument("--list", default="configs/lists/la_eval10.list")
    parser.add_argument("--fill", choices=("phantom", "noise"), default="phantom",
                        help="what surrounds a pasted LA case (default: a phantom scan)")
    parser.add_argument("--phantom-cases", type=int, default=0,
                        help="instead of --data-root: this many phantom test cases with their whole field of view")
    parser.add_argument("--phantom-seed", type=int, default=0, help="the phantom dataset's seed (the demo's: 0)")
    parser.add_argument("--phantom-shape", type=int, nargs=3, metavar=("H", "W", "D"),
                        help="the phantom cases' median crop size (default: the phantom dataset's, the demo's)")
    parser.add_argument("--canvas", type=int, nargs=2, default=(576, 576), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=int, help="Predictor.predict_whole_scan margin (default: its own)")
    parser.add_argument("--coarse-overlap", type=float, default=0.0, help="Predictor.predict_whole_scan's (0)")
    parser.add_argument("--component", choices=("deepest", "largest"), default="deepest",
                        help="Predictor.predict_whole_scan's (deepest)")
    parser.add_argument("--coarse-threshold", type=float, default=0.9, help="Predictor.predict_whole_scan's (0.9)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.phantom_shape is None:
        from sassnet_tf.data.phantom import NOMINAL_SHAPE

        args.phantom_shape = tuple(NOMINAL_SHAPE)
    if not args.phantom_cases and not args.data_root:
        parser.error("give --data-root (LA cases pasted into larger scans) or --phantom-cases N")

    from sassnet_tf.inference.predictor import Predictor
    from sassnet_tf.metrics import case_metrics
    from sassnet_tf.utils.atomic import atomic_write_text
    from sassnet_tf.utils.runtime import cpu_description

    predictor = Predictor.from_path(args.model, weights=args.weights)
    predictor.segment_fn()
    rng = np.random.default_rng(args.seed)
    rows = []
    for case_id, crop_image, crop_label, whole_image, whole_label in _cases(args, rng):
        tick = time.perf_counter()
        crop = predictor.predict(crop_image)["label"]
        crop_seconds = time.perf_counter() - tick
        tick = time.perf_counter()
        whole = predictor.predict_whole_scan(whole_image, margin=args.margin, coarse_overlap=args.coarse_overlap,
                                             component=args.component, coarse_threshold=args.coarse_threshold)
        whole_seconds = time.perf_counter() - tick
        row = {"case": case_id, "shape": list(crop_image.shape), "canvas": list(whole_image.shape),
               "dice_crop": case_metrics(crop, crop_label)["dice"],
               "dice_whole_scan": case_metrics(whole["label"], whole_label)["dice"],
               "box": [list(b) for b in whole["box"]], "box_holds_the_label": _box_holds(whole["box"], whole_label),
               "seconds_crop": round(crop_seconds, 2), "seconds_whole_scan": round(whole_seconds, 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    means = {k: float(np.mean([r[k] for r in rows])) for k in ("dice_crop", "dice_whole_scan", "seconds_crop",
                                                               "seconds_whole_scan")}
    source = ({"phantom_cases": args.phantom_cases, "phantom_seed": args.phantom_seed,
               "phantom_shape": list(args.phantom_shape)} if args.phantom_cases else
              {"data_root": args.data_root, "list": args.list, "fill": args.fill, "seed": args.seed})
    report = {"cpu_model": cpu_description(),
              "context": os.environ.get("BENCH_CONTEXT", ""),
              "model": predictor.description, "settings": predictor.settings.to_metadata(), "source": source,
              "canvas": list(args.canvas), "margin": args.margin, "coarse_overlap": args.coarse_overlap,
              "component": args.component, "coarse_threshold": args.coarse_threshold, "cases": len(rows),
              "means": means, "box_held_the_label": sum(r["box_holds_the_label"] for r in rows), "per_case": rows}
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.output:
        atomic_write_text(args.output, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
