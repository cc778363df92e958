"""GEPNet learning curve: SER at fixed SNRs (8x8 16-QAM, fixed draws) against samples seen.

Reads the snapshots of a training run made with ``--keep-every``::

    mimo-fast train gepnet --preset published --keep-every 500 --out runs/gepnet_pub
    python tools/gepnet_learning_curve.py runs/gepnet_pub --json curve.json --png curve.png

Each snapshot (``RUN/snapshots/step_*.safetensors``) is evaluated once on the same
validation draws (``mimo_fast.eval.montecarlo`` with a fixed seed per SNR and a fixed
number of vectors, no early stop: every snapshot and EP see identical channels, symbols
and noise); results are cached in the JSON, so rerunning after more training evaluates
only the new snapshots. EP (classical, 10 iterations) on the same draws is the reference
line. The default sizes give about 200 GEPNet errors at 25 dB at the published SER
(2.27e-4: 900,000 symbols) and about 1,000 at 20 dB (1.12e-2: 100,000 symbols).

Evaluation runs in ``--dtype`` (the draws are made in complex64 as ``mimo-fast simulate``
makes them and converted). float32 halves the cost of a float64-trained snapshot and
counted the same errors on the one checked (step 5,000 of the first published-recipe run,
25 dB, 40,000 symbols: 105 errors in both precisions).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import time

import torch

from mimo_fast import comm, detect
from mimo_fast.detect.learned import weights
from mimo_fast.eval.montecarlo import SimConfig, simulate

STEP = re.compile(r"step_(\d+)\.safetensors$")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="training run folder (with snapshots/)")
    p.add_argument("--snr", type=float, nargs="+", default=[20.0, 25.0])
    p.add_argument("--symbols", type=int, nargs="+", default=[100_000, 900_000],
                   help="symbols per SNR (one value per --snr)")
    p.add_argument("--seed", type=int, default=20261206, help="validation draws (not a training seed)")
    p.add_argument("--batch", type=int, default=2500)
    p.add_argument("--every", type=int, default=1, help="evaluate every k-th snapshot (and the last)")
    p.add_argument("--json", required=True, help="results (and cache)")
    p.add_argument("--png", default=None, help="plot")
    p.add_argument("--backend", default=None)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="evaluate the snapshots in this precision (default float32)")
    args = p.parse_args(argv)
    if len(args.symbols) != len(args.snr):
        p.error("--symbols needs one value per --snr")
    return args


def snapshots(run: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
    out = []
    for f in sorted((run / "snapshots").glob("step_*.safetensors")):
        m = STEP.search(f.name)
        if m:
            out.append((int(m.group(1)), f))
    return out


class _Cast(torch.nn.Module):
    """Runs ``det`` on inputs converted to its dtype (the Monte-Carlo draws are complex64)."""

    def __init__(self, det, real):
        super().__init__()
        self.det, self.real = det.to(real), real

    def forward(self, y, H, noise_var, mask=None):
        c = torch.complex128 if self.real == torch.float64 else torch.complex64
        nv = noise_var.to(self.real) if isinstance(noise_var, torch.Tensor) else noise_var
        return self.det(y.to(c), H.to(c), nv, mask)


def evaluate(dets: dict, args) -> dict:
    """{name: {snr: {ser, symbol_errors, symbols}}} on the fixed draws."""
    c = comm.qam(16)
    out = {name: {} for name in dets}
    for snr, sym in zip(args.snr, args.symbols):
        cfg = SimConfig(nr=8, nt=8, mod="qam16", min_errors=10 ** 12, max_symbols=sym, batch=args.batch,
                        seed=args.seed + int(round(10 * snr)), backend=args.backend)
        for r in simulate(dets, c, cfg, [snr], progress=False):
            out[r["detector"]][f"{snr:g}"] = {k: r[k] for k in ("ser", "symbol_errors", "symbols")}
    return out


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pts = sorted(res["points"], key=lambda r: r["samples"])
    for i, snr in enumerate(res["snr"]):
        key = f"{snr:g}"
        xs = [r["samples"] for r in pts]
        ys = [max(r["gepnet"][key]["ser"], 1e-7) for r in pts]
        line, = ax.semilogy(xs, ys, "o-", label=f"GEPNet {key} dB")
        ax.axhline(res["ep"][key]["ser"], color=line.get_color(), ls="--", label=f"EP {key} dB")
        if key in res.get("published", {}):
            ax.axhline(res["published"][key], color=line.get_color(), ls=":", label=f"published {key} dB")
    ax.set_xscale("log")
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("SER (8x8 16-QAM, fixed draws)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("GEPNet learning curve")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    args = parse(argv)
    run = pathlib.Path(args.run)
    out = pathlib.Path(args.json)
    res = json.loads(out.read_text()) if out.exists() else {}
    cfg = {"snr": args.snr, "symbols": args.symbols, "seed": args.seed, "dtype": args.dtype}
    if res.get("config") != cfg:          # other draws: nothing cached applies
        res = {"config": cfg, "snr": args.snr, "points": []}
    res["published"] = {"20": 1.12e-2, "25": 2.27e-4, "30": 1.78e-5}
    c = comm.qam(16)
    if "ep" not in res:
        res["ep"] = evaluate({"ep": detect.make("ep", c, backend=args.backend)}, args)["ep"]
    done = {r["step"] for r in res["points"]}
    snaps = snapshots(run)
    todo = [s for i, s in enumerate(snaps) if (i % args.every == 0 or i == len(snaps) - 1) and s[0] not in done]
    for step, f in todo:
        t0 = time.perf_counter()
        det = weights.load(f, expect="gepnet")
        rec = det.record
        real = torch.float64 if args.dtype == "float64" else torch.float32
        r = evaluate({"gepnet": _Cast(det, real)}, args)["gepnet"]
        res["points"].append({"step": step, "samples": rec.get("samples", step * rec["train"]["batch"]),
                              "wall_clock_s": rec.get("wall_clock_s"), "file": f.name, "gepnet": r})
        res["points"].sort(key=lambda p: p["step"])
        weights.atomic_write(out, lambda tmp: pathlib.Path(tmp).write_text(json.dumps(res, indent=1)))
        shown = ", ".join(f"{k} dB {v['ser']:.3g} ({v['symbol_errors']})" for k, v in r.items())
        print(f"step {step}: {shown}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    weights.atomic_write(out, lambda tmp: pathlib.Path(tmp).write_text(json.dumps(res, indent=1)))
    if args.png and res["points"]:
        plot(res, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
