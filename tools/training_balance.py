"""The adversarial balance of recorded SASSNet runs: discriminator and loss terms, averaged per block of iterations.

    python tools/training_balance.py [--records docs/results/la_official] [--rows sassnet_8 sassnet_16] [--block 1000]
        [--json out.json]

For every recorded run of the rows (`<records>/<row>[-seed<S>]/scalars.csv`, the training scalars `la_results`
keeps): the mean of each term over each block of iterations -- discriminator accuracy and loss, the network's
adversarial loss, its weight w(t) and the weighted adversarial term w(t) * adv, Dice and SDM losses -- and, for the
last block, the weighted adversarial term's share of the loss. Training scalars only: no test score is read.
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

from tools.records import recorded_files  # noqa: E402

TERMS = ("d_accuracy", "d_loss", "adv_loss", "consistency_weight", "dice_loss", "sdm_loss", "loss")


def read_scalars(path: str) -> dict:
    """{term: {step: value}} of the `train/...` tags of a scalars.csv."""
    out = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for line in csv.DictReader(fh):
            tag = line["tag"]
            if tag.startswith("train/"):
                out.setdefault(tag[len("train/"):], {})[int(line["step"])] = float(line["value"])
    return out


def block_means(scalars: dict, block: int) -> list:
    """[{"iterations": "1-1000", term: mean, ..., "weighted_adv": mean of w(t) * adv}] per block of iterations."""
    steps = sorted(scalars.get("loss", {}))
    blocks = []
    for start in range(0, steps[-1] if steps else 0, block):
        inside = [s for s in steps if start < s <= start + block]
        if not inside:
            continue
        row = {"iterations": f"{start + 1}-{start + block}"}
        for term in TERMS:
            values = [scalars[term][s] for s in inside if s in scalars.get(term, {})]
            row[term] = statistics.mean(values) if values else None
        products = [scalars["consistency_weight"][s] * scalars["adv_loss"][s] for s in inside
                    if s in scalars.get("consistency_weight", {}) and s in scalars.get("adv_loss", {})]
        row["weighted_adv"] = statistics.mean(products) if products else None
        blocks.append(row)
    return blocks


def analyse(records: str, rows: list, block: int) -> dict:
    """{run name: [block means]} of every recorded run of `rows` under `records`."""
    out = {}
    for row in rows:
        for _row, run, path in recorded_files(records, "scalars.csv", rows={row}):
            out[run] = block_means(read_scalars(path), block)
    return out


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", default=os.path.join(REPO, "docs", "results", "la_official"))
    p.add_argument("--rows", nargs="+", default=["sassnet_8", "sassnet_16"])
    p.add_argument("--block", type=int, default=1000, help="iterations per block")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if args.block < 1:
        p.error(f"--block must be a positive integer, got {args.block}")
    if not os.path.isdir(args.records):
        print(f"training_balance: error: --records {args.records}: not a folder", file=sys.stderr)
        return 2
    result = analyse(args.records, args.rows, args.block)
    if not result:
        print(f"training_balance: error: no scalars.csv of rows {', '.join(args.rows)} under {args.records}",
              file=sys.stderr)
        return 2
    for run, blocks in result.items():
        print(f"{run}\n  iterations   D acc   D loss  adv     w       w*adv   Dice    SDM     loss")
        for b in blocks:
            print(f"  {b['iterations']:>11}  " + "  ".join(_fmt(b[k]) for k in (
                "d_accuracy", "d_loss", "adv_loss", "consistency_weight", "weighted_adv", "dice_loss", "sdm_loss",
                "loss")))
        last = blocks[-1] if blocks else None
        if last and last["weighted_adv"] is not None and last["loss"]:
            print(f"  last block: w*adv is {100 * last['weighted_adv'] / last['loss']:.0f} % of the loss")
    if args.json:
        from sassnet_tf.utils.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
