"""How far each detector of a committed `mimo-fast simulate --json` curve is from the
matched-filter bound, and from the other detectors, at a target SER.

For each input file: the SNR where every detector's curve crosses ``--target`` (log-linear
interpolation between the bracketing points, mimo_fast.eval.snr_at_ser), the SNR where the
matched-filter bound does (no detector can reach the target left of it), and the gaps in dB.
Writes a Markdown table and the same numbers as JSON.

    cd experiments/learned_detectors
    python mfb_gap.py --target 1e-2 --out mfb_gap_1e-2 \
        simulate_ampgnn_32x32_qam4.json simulate_amp_64x64_qam4.json simulate_ampgnn_32x24_qam4_trained16+32.json
"""
from __future__ import annotations

import argparse
import json
import math

from mimo_fast.eval import snr_at_mfb, snr_at_ser


def rows_for(path: str, target: float) -> list:
    with open(path) as f:
        d = json.load(f)
    cfg = d["config"]
    rho = cfg.get("rho_rx") if cfg.get("channel") == "kronecker" else None
    mfb = snr_at_mfb(target, cfg["nr"], cfg["nt"], cfg["mod"], rho_rx=rho)
    rows = []
    for name in dict.fromkeys(r["detector"] for r in d["results"]):
        pts = [(r["snr_db"], r["ser"]) for r in d["results"] if r["detector"] == name]
        s = snr_at_ser([p[0] for p in pts], [p[1] for p in pts], target)
        rows.append({"file": path, "setting": f"{cfg['nr']}x{cfg['nt']} {cfg['mod']}", "detector": name,
                     "snr_db": None if math.isnan(s) else round(s, 3), "mfb_snr_db": round(mfb, 3),
                     "gap_to_mfb_db": None if math.isnan(s) else round(s - mfb, 3)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="FILE")
    p.add_argument("--target", type=float, default=1e-2, help="SER (default 1e-2)")
    p.add_argument("--out", default=None, help="path without extension: writes .md and .json")
    args = p.parse_args(argv)
    rows = [r for path in args.inputs for r in rows_for(path, args.target)]
    lines = [f"SNR (dB) at SER {args.target:g}; MFB = matched-filter bound (no detector is left of it); "
             "gap = detector - MFB.", "",
             "| setting | detector | SNR at target | MFB | gap to MFB |", "|---|---|---|---|---|"]
    for r in rows:
        fmt = (lambda v: "not reached" if v is None else f"{v:.2f}")  # noqa: E731
        lines.append(f"| {r['setting']} | {r['detector']} | {fmt(r['snr_db'])} | {r['mfb_snr_db']:.2f} | "
                     f"{fmt(r['gap_to_mfb_db'])} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write(text + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump({"target_ser": args.target, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
