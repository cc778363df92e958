"""Our published-recipe GEPNet run against the authors' own training log, sample for sample.

The GEPNet authors' repository logs, per epoch of 100,000 samples, ``trainAcc``: one minus
the symbol error rate of the training batches of that epoch (complex 16-QAM symbols; the
decision is the point nearest the posterior mean of each real node's softmax; 8x8 with
P(8 users) = 2/3, P(4) = 1/3, SNR uniform in [10, 30.5] / [8, 23.5] dB). This script
measures the same quantity for our snapshots: SER on fresh draws of that law, with the same
decision rule (and, beside it, the detector's own argmax decision), so a snapshot taken
after n samples can be set against the authors' epoch n / 100,000::

    python experiments/gepnet_published/authors_train_acc.py experiments/gepnet_published/run \\
        --steps 1000 2000 5000 10000 20000 30000 --samples 40000 \\
        --json experiments/gepnet_published/authors_train_acc.json --png authors_train_acc.png \\
        [--reference LABEL WEIGHTS]

Their epoch figure is the mean of per-batch SERs, each batch of one user count, so the
figure to compare is ``batch_mix = (SER_4 + 2 SER_8) / 3``, not the symbol-weighted mix.

The authors' figures are copied into ``AUTHORS`` as numbers (their log's epochs, not code).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import torch

from mimo_fast.detect.learned import weights
from mimo_fast.detect.learned.gnn import moments, pam_targets
from mimo_fast.train.data import VAL_STREAM, BatchGenerator, DataConfig

#: 1 - trainAcc of the authors' log (reports/GEPNet_8X[4 8]_16QAM/reportHPC.txt, epochs 0-488),
#: averaged over windows of epochs: (first, last epoch, 0-based) -> mean training SER. Epoch e
#: ends after (e + 1) x 99,968 samples.
AUTHORS = {(0, 0): 0.1686, (1, 1): 0.1184, (2, 4): 0.1081, (5, 9): 0.1045, (10, 14): 0.1019,
           (15, 19): 0.1026, (20, 24): 0.1007, (25, 29): 0.1011, (30, 34): 0.0985, (35, 39): 0.0980,
           (40, 49): 0.0984, (50, 99): 0.0957, (100, 149): 0.0931, (150, 199): 0.0920,
           (200, 299): 0.0918, (300, 399): 0.0911, (400, 488): 0.0915}
SAMPLES_PER_EPOCH = 99_968


def authors_ser(epoch: float):
    """The authors' mean training SER over the window holding ``epoch`` (None past their log)."""
    for (lo, hi), v in AUTHORS.items():
        if lo <= epoch < hi + 1:
            return {"epochs": [lo, hi], "ser": v}
    return None


@torch.no_grad()
def measure(det, samples: int, seed: int, batch: int) -> dict:
    cfg = DataConfig(nr=8, nt=8, nt_min=4, nt_step=4, nt_dist="proportional", mod="qam16",
                     snr_ranges={4: (8.0, 23.5), 8: (10.0, 30.5)})
    gen = BatchGenerator(cfg, seed=seed, stream=VAL_STREAM)
    levels = det.constellation.real_levels.to(torch.float64)
    err = {(k, rule): 0 for k in (4, 8) for rule in ("mean", "arg")}
    sym = {4: 0, 8: 0}
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        b = gen(n)
        y, H = b.y.to(torch.complex128), b.H.to(torch.complex128)
        nv = b.noise_var.to(torch.float64)
        # the final iteration's per-real-node PAM logits (n, 2Nt, 4): the public forward gives
        # the QAM points' log-probabilities, the authors' rule reads the real nodes
        lg = det._run(y, H, nv, b.mask)[-1]
        x_hat, _ = moments(lg.softmax(-1), levels)                  # posterior mean per real node
        dec = {"mean": (x_hat[..., None] - levels).abs().argmin(-1),  # nearest PAM level
               "arg": lg.argmax(-1)}
        tgt = pam_targets(torch.where(b.mask, b.x_idx, 0), det)
        Nt = b.mask.shape[1]
        users = b.mask.sum(1)
        for k in (4, 8):
            rows = users == k
            sym[k] += int(b.mask[rows].sum())
            for rule, d in dec.items():
                wrong = d[rows] != tgt[rows]
                err[k, rule] += int(((wrong[:, :Nt] | wrong[:, Nt:]) & b.mask[rows]).sum())
        done += n
    out = {"symbols": sym[4] + sym[8]}
    for rule, name in (("mean", "posterior_mean"), ("arg", "argmax")):
        s4, s8 = err[4, rule] / sym[4], err[8, rule] / sym[8]
        out[f"ser_{name}"] = {"nt4": s4, "nt8": s8,
                              # the authors' epoch figure is a mean over batches of one user
                              # count each: 1/3 of them 4 users, 2/3 8 users
                              "batch_mix": (s4 + 2 * s8) / 3,
                              "symbol_mix": (err[4, rule] + err[8, rule]) / (sym[4] + sym[8])}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="training run folder (with snapshots/)")
    p.add_argument("--steps", type=int, nargs="+", required=True, help="snapshot steps to measure")
    p.add_argument("--samples", type=int, default=40_000, help="fresh samples per snapshot")
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--seed", type=int, default=20261207, help="draws (not a training seed)")
    p.add_argument("--json", required=True, help="results (and cache)")
    p.add_argument("--png", default=None, help="plot: ours and the authors' against samples seen")
    p.add_argument("--reference", nargs=2, action="append", default=[], metavar=("LABEL", "WEIGHTS"),
                   help="also measure this weights file (e.g. the authors' trained model, converted in a "
                        "scratch folder) and keep it under references/LABEL")
    args = p.parse_args(argv)
    out = pathlib.Path(args.json)
    res = json.loads(out.read_text()) if out.exists() else {"points": {}}
    res["config"] = {"samples": args.samples, "seed": args.seed, "law": "8x8 16-QAM, P(k) ∝ k over {4, 8}, "
                     "SNR 10-30.5 dB (8 users) / 8-23.5 dB (4 users)", "dtype": "float64"}
    res["authors_train_ser"] = [{"epochs": [lo, hi], "ser": v} for (lo, hi), v in AUTHORS.items()]
    for label, path in args.reference:
        if label not in res.setdefault("references", {}):
            det = weights.load(path, expect="gepnet").to(torch.float64).eval()
            res["references"][label] = measure(det, args.samples, args.seed, args.batch)
            print(f"{label}: SER {res['references'][label]['ser_posterior_mean']['batch_mix']:.4f} (batch mix)",
                  flush=True)
            out.write_text(json.dumps(res, indent=1))
    for step in args.steps:
        key = str(step)
        if key in res["points"]:
            continue
        f = pathlib.Path(args.run) / "snapshots" / f"step_{step:08d}.safetensors"
        det = weights.load(f, expect="gepnet").to(torch.float64).eval()
        t0 = time.perf_counter()
        r = measure(det, args.samples, args.seed, args.batch)
        r["samples_seen"] = step * 128
        r["epoch"] = step * 128 / SAMPLES_PER_EPOCH
        r["seconds"] = round(time.perf_counter() - t0, 1)
        r["authors"] = authors_ser(r["epoch"])
        res["points"][key] = r
        pm = r["ser_posterior_mean"]
        print(f"step {step} (epoch {r['epoch']:.1f}): SER {pm['batch_mix']:.4f} (batch mix; 4 users {pm['nt4']:.4f}, "
              f"8 users {pm['nt8']:.4f}; argmax {r['ser_argmax']['batch_mix']:.4f}), {r['symbols']} symbols; "
              f"authors {r['authors']} [{r['seconds']} s]", flush=True)
        out.write_text(json.dumps(res, indent=1))
    out.write_text(json.dumps(res, indent=1))
    if args.png:
        plot(res, args.png)
    return 0


def plot(res: dict, png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, w in enumerate(res["authors_train_ser"]):
        lo, hi = w["epochs"]
        ax.plot([lo * SAMPLES_PER_EPOCH, (hi + 1) * SAMPLES_PER_EPOCH], [w["ser"]] * 2, color="C1", lw=2,
                label="authors' training log (mean over the epochs)" if i == 0 else None)
    pts = sorted(res["points"].values(), key=lambda r: r["samples_seen"])
    ax.plot([r["samples_seen"] for r in pts], [r["ser_posterior_mean"]["batch_mix"] for r in pts], "o-",
            color="C0", label="ours, snapshot on fresh draws of their law")
    for j, (label, r) in enumerate(res.get("references", {}).items()):
        ax.axhline(r["ser_posterior_mean"]["batch_mix"], color="C2", ls="--", lw=1,
                   label=f"{label}, on the same draws")
    ax.set_xscale("log")
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("SER, training law (1/3 of batches 4 users, 2/3 8 users)")
    ax.set_title("GEPNet 8x8 16-QAM: our published-recipe run against the authors' log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
