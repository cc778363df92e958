"""How much can a 16-point constellation gain over 16-QAM under ML, at 8x2 (issue 8's low-MUI case)?

The E2E paper reports its learned constellation about 0.2 dB better than ML on 16-QAM at
SER 1e-4 for Nt = 2, Nr = 8. With only two users the gain has to come mostly from the
constellation itself. This script checks that such a gain exists, with no learning involved.
It takes the best 16-point subset of the hexagonal lattice, i.e. the 16 points nearest a
centre, with the centre chosen on a grid over the lattice's fundamental cell to maximise
d_min^2 / E. It also trains 16 free points from 16-QAM on the E2E loss (eq. 12) with the
exact ML posterior as the receiver (``free16``: no GNN, the points are the parameters, Adam).
That shows whether the loss itself pulls the points away from 16-QAM when the receiver is
ideal. It then runs exact ML on all three over the same channels, messages and noise
(`mimo_fast.eval.simulate`, same seed), and writes
``e2e_constellation_headroom.{json,md}`` beside this script.

    OMP_NUM_THREADS=1 python experiments/e2e_constellation_headroom/e2e_constellation_headroom.py --snr 10 12 14 16 --min-errors 400
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib

import numpy as np
import torch

from mimo_fast import comm, detect
from mimo_fast.eval import SimConfig, simulate, snr_at_ser

RESULTS = pathlib.Path(__file__).resolve().parent   # results beside the script (experiments/<name>/)


def figure_of_merit(points: np.ndarray) -> float:
    """d_min^2 / E (mean energy); 16-QAM has 0.4."""
    d = np.abs(points[:, None] - points[None])
    d[np.diag_indices(len(points))] = np.inf
    return float(d.min() ** 2 / np.mean(np.abs(points) ** 2))


def best_hex16(grid: int = 41) -> np.ndarray:
    """The 16 hexagonal-lattice points nearest a centre c, with c the best on a grid over
    the fundamental cell; shifted to zero mean and scaled to unit energy."""
    i, j = np.meshgrid(np.arange(-6, 7), np.arange(-6, 7))
    lattice = (i + 0.5 * j + 1j * (math.sqrt(3) / 2) * j).ravel()
    best, best_pts = -1.0, None
    for a in np.linspace(0, 1, grid):
        for b in np.linspace(0, 1, grid):
            c = a + 0.5 * b + 1j * (math.sqrt(3) / 2) * b
            pts = lattice[np.argsort(np.abs(lattice - c), kind="stable")[:16]]
            pts = pts - pts.mean()
            f = figure_of_merit(pts)
            if f > best + 1e-12:
                best, best_pts = f, pts
    return best_pts / np.sqrt(np.mean(np.abs(best_pts) ** 2))


def unit_power(p: torch.Tensor) -> torch.Tensor:
    """(M, 2) real parameters -> (M,) complex points, zero mean, unit average energy."""
    c = torch.complex(p[:, 0], p[:, 1])
    c = c - c.mean()
    return c / c.abs().square().mean().sqrt()


def train_free_points(nr: int, nt: int, snr_min: float, snr_max: float, steps: int, batch: int,
                      lr: float, seed: int) -> torch.Tensor:
    """16 points trained from 16-QAM on eq. 12 with the exact ML posterior as receiver:
    p(s_k | y) is the marginal of softmax_x(-||y - H x||^2 / sigma^2) over all 16^Nt
    vectors x. Channels, noise and SNR as `mimo-fast train` draws them (docs/conventions.md)."""
    g = torch.Generator().manual_seed(seed)
    q = comm.qam(16).points
    param = torch.nn.Parameter(torch.stack([q.real, q.imag], -1).clone())
    opt = torch.optim.Adam([param], lr=lr)
    joint = torch.cartesian_prod(*[torch.arange(16)] * nt).view(-1, nt)          # (16^Nt, Nt)
    for _ in range(steps):
        c = unit_power(param)
        H = comm.draw_channel("rayleigh", batch, nr, nt, g).to(torch.complex128)
        s = torch.randint(0, 16, (batch, nt), generator=g)
        snr = snr_min + (snr_max - snr_min) * torch.rand(batch, generator=g, dtype=torch.float64)
        nv = nt / (nr * 10.0 ** (snr / 10))
        y = comm.awgn((H @ c[s][..., None])[..., 0], nv, g)
        r = y[:, None, :] - torch.einsum("brt,ht->bhr", H, c[joint])
        lp = (-(r.abs().square().sum(-1)) / nv[:, None]).log_softmax(-1).view(batch, *[16] * nt)
        loss = 0.0
        for k in range(nt):   # the marginal of user k: logsumexp over the other users' axes
            others = [d + 1 for d in range(nt) if d != k]
            mk = lp.logsumexp(others) if others else lp
            loss = loss - mk.gather(1, s[:, k:k + 1]).mean() / nt
        opt.zero_grad()
        loss.backward()
        opt.step()
    return unit_power(param).detach()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nr", type=int, default=8)
    p.add_argument("--nt", type=int, default=2)
    p.add_argument("--snr", type=float, nargs="+", default=[12.0, 14.0, 16.0])
    p.add_argument("--min-errors", type=int, default=400)
    p.add_argument("--max-symbols", type=int, default=8_000_000)
    p.add_argument("--batch", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "e2e_constellation_headroom"))
    p.add_argument("--free-steps", type=int, default=3000)
    p.add_argument("--free-lr", type=float, default=3e-3)
    p.add_argument("--free-batch", type=int, default=512)
    p.add_argument("--free-snr", type=float, nargs=2, default=[13.0, 16.0])
    a = p.parse_args(argv)
    hexa = comm.Constellation(torch.from_numpy(best_hex16()), name="hex16")
    free = comm.Constellation(train_free_points(a.nr, a.nt, *a.free_snr, a.free_steps, a.free_batch,
                                                a.free_lr, a.seed), name="free16")
    qam = comm.qam(16)
    cfg = SimConfig(nr=a.nr, nt=a.nt, mod="qam16", min_errors=a.min_errors, max_symbols=a.max_symbols,
                    batch=a.batch, seed=a.seed)
    out = {"config": {**cfg.to_dict(), "snr_db": a.snr, "torch": torch.__version__,
                      "free16": {"steps": a.free_steps, "lr": a.free_lr, "batch": a.free_batch,
                                 "snr": a.free_snr}},
           "figure_of_merit": {}, "points": {}, "results": {}}
    names = ("qam16", "hex16", "free16")
    for c in (qam, hexa, free):
        out["figure_of_merit"][c.name] = figure_of_merit(c.points.numpy())
        out["points"][c.name] = [[float(z.real), float(z.imag)] for z in c.points]
        res = simulate({"ml": detect.make("ml", c)}, c, cfg, a.snr, progress=False)
        out["results"][c.name] = [{k: r[k] for k in ("snr_db", "ser", "symbol_errors", "symbols")} for r in res]
    fom = out["figure_of_merit"]
    lines = [f"# ML on 16-QAM, the best hexagonal 16 points and 16 free points trained on eq. 12, "
             f"{a.nr}x{a.nt} Rayleigh", "",
             "d_min^2/E: " + ", ".join(f"{n} {fom[n]:.4f} ({10 * math.log10(fom[n] / fom['qam16']):+.2f} dB)"
                                       for n in names),
             "", "| SNR dB | " + " | ".join(f"ML, {n}" for n in names) + " |", "|---|---|---|---|"]
    for rows in zip(*(out["results"][n] for n in names)):
        lines.append(f"| {rows[0]['snr_db']:g} | " + " | ".join(
            f"{r['ser']:.3e} ({r['symbol_errors']} errors)" for r in rows) + " |")
    for target in (1e-3, 1e-4):
        s = {n: snr_at_ser(a.snr, [r["ser"] for r in out["results"][n]], target) for n in names}
        out.setdefault("snr_at", {})[f"{target:g}"] = {n: v if math.isfinite(v) else None for n, v in s.items()}
        lines.append(f"\nSNR at SER {target:g} (log-linear interpolation): " + ", ".join(
            f"{n} {v:.2f} dB" for n, v in s.items()) + "; gain over qam16: " + ", ".join(
            f"{n} {s['qam16'] - s[n]:.2f} dB" for n in names[1:]))
    pathlib.Path(a.out + ".json").write_text(json.dumps(out, indent=1) + "\n")
    pathlib.Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
