"""Merge `mimo-fast simulate --json` files into one curve (JSON + PNG), for the RE-MIMO
comparisons whose detectors need separate runs (OAMP-Net2 trained per Ntr, each with its own
--weights). Each input is FILE or FILE:SUFFIX (SUFFIX is appended to its detector names).

    python experiments/remimo/remimo_curves.py --out experiments/remimo/simulate_remimo_64x16_qam16 \
        --title "64x16 16-QAM" a.json b.json:"(Ntr 16)"
"""
from __future__ import annotations

import argparse
import json

from mimo_fast.eval import plot


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="FILE[:SUFFIX]")
    p.add_argument("--out", required=True, help="output path without extension (.json and .png are written)")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    sources, results = [], []
    for item in args.inputs:
        path, _, suffix = item.partition(":")
        with open(path) as f:
            d = json.load(f)
        sources.append({"file": path, "suffix": suffix, "config": d["config"]})
        for r in d["results"]:
            results.append(dict(r, detector=f"{r['detector']} {suffix}".strip()))
    with open(args.out + ".json", "w") as f:
        json.dump({"config": {"merged_from": sources}, "results": results}, f, indent=2)
    plot(results, args.out + ".png", args.title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
