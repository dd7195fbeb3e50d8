"""How much Dice the half-resolution protocol loses before any network runs: its ceiling on each case.

    python tools/resolution_ceiling.py [--list test.list] [--data-root ../shared/data/LA] [--factor 2] [--json out.json]

The half-resolution rows train on labels reduced by `--factor` (`data.io.downsample_label`: tent-weighted average,
kept where >= 0.5) and are scored after their probabilities are upsampled back (`inference.resample.resize_linear`,
threshold 0.5) against the original labels. A network that reproduced its training target exactly would score:

- `target`: the reduced 0/1 label, upsampled and thresholded, against the original label;
- `soft`: the reduced label's weighted average (before the 0.5 cut: the best a half-resolution probability can
  carry), upsampled and thresholded.

Both are upper bounds of what any half-resolution row can reach on that case, so the gap between a half-resolution
row and the paper's full-resolution number holds at least (100 - ceiling) points that are the protocol's, not the
method's. Reads only labels; no network, no setting chosen (test.list rules, REFERENCE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # tools.records and sassnet_tf from this checkout

from tools.records import LA_ROOT, default_la_root  # noqa: E402


def case_ceiling(label, factor: int) -> dict:
    """{"target": Dice %, "soft": Dice %, "voxels": label voxels} of one full-resolution 0/1 label."""
    import numpy as np

    from sassnet_tf.data.io import downsample_label, downsample_volume
    from sassnet_tf.inference.resample import resize_linear
    from sassnet_tf.metrics import dice

    gt = np.asarray(label) > 0
    target = downsample_label(gt.astype(np.uint8), factor).astype(np.float32)
    soft = downsample_volume(gt.astype(np.float32), factor)
    up = {name: resize_linear(low, gt.shape, factor=factor) >= 0.5 for name, low in (("target", target),
                                                                                     ("soft", soft))}
    return {name: 100.0 * dice(pred, gt) for name, pred in up.items()} | {"voxels": int(gt.sum())}


def analyse(data_root: str, list_file: str, factor: int) -> dict:
    from sassnet_tf.data.dataset_layout import open_dataset

    layout = open_dataset(data_root)
    cases = layout.read_list(list_file)
    per_case = {case: case_ceiling(layout.load(case).label, factor) for case in cases}
    summary = {name: {"mean": statistics.mean(c[name] for c in per_case.values()),
                      "min": min(c[name] for c in per_case.values())} for name in ("target", "soft")}
    return {"data_root": data_root, "list": list_file, "factor": factor, "cases": len(cases),
            "ceiling_dice_percent": summary, "per_case": per_case}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=default_la_root(), help=f"the LA release (default {LA_ROOT})")
    p.add_argument("--list", default="test.list", help="list file of case IDs, relative to the root")
    p.add_argument("--factor", type=int, default=2, help="the protocol's downsampling factor")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.data_root, args.list)):
        print(f"resolution_ceiling: error: {os.path.join(args.data_root, args.list)}: no such list file",
              file=sys.stderr)
        return 2
    result = analyse(args.data_root, args.list, args.factor)
    for case, c in sorted(result["per_case"].items(), key=lambda kv: kv[1]["target"]):
        print(f"{case}  target {c['target']:6.2f}  soft {c['soft']:6.2f}  voxels {c['voxels']}")
    s = result["ceiling_dice_percent"]
    print(f"mean over {result['cases']} cases: target {s['target']['mean']:.2f} (min {s['target']['min']:.2f}), "
          f"soft {s['soft']['mean']:.2f} (min {s['soft']['min']:.2f})")
    if args.json:
        from sassnet_tf.utils.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
