"""``mimo-fast precode``: evaluate precoders on fresh channels (docs/precoding.md).

Draws ``--samples`` channels h_k ~ CN(0, I_N) per SNR (seeded), runs each method, and
reports the mean sum SE (bit/s/Hz), the SE ratio against WMMSE (mean over samples of
SE / SE_WMMSE; WMMSE is always run as the reference) and the wall-clock of the method on
the whole batch. Learned methods load the shipped weights for (N, K, SNR) or ``--weights``.

``--objective ee`` (problem P3 of docs/precoding.md: max EE s.t. R_k >= R_min, no transmit-power
cap) runs once per ``--r-min`` and adds the EE (bit/s/Hz/W with the paper's power model), the EE
ratio against ZF-Dinkelbach (always run as the EE reference) and the constraint-satisfaction
ratio; ``model-gnn`` then loads the EE weights ``model-gnn-ee_<n>x<k>_<snr>db_r<R_min>``.
"""
from __future__ import annotations

import argparse
import time

from mimo_fast.cli import _args

METHODS = ("mrt", "zf", "rzf", "wmmse", "zf-dinkelbach", "vanilla-gnn", "model-gnn")
LEARNED = ("vanilla-gnn", "model-gnn")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("precode", help="evaluate downlink precoders (SE, ratio to WMMSE, time)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, required=True, help="base-station antennas N")
    p.add_argument("--k", type=int, required=True, help="single-antenna users K")
    p.add_argument("--snr", type=float, nargs="+", required=True, help="SNR = P_max / sigma0^2 in dB")
    p.add_argument("--method", nargs="+", required=True, choices=METHODS, metavar="NAME",
                   help="one or more of: " + " ".join(METHODS))
    p.add_argument("--objective", choices=("se", "ee"), default="se",
                   help="se (default: sum SE, P1) or ee (EE with per-user R_min, P3)")
    p.add_argument("--r-min", type=float, nargs="+", default=[3.0], metavar="R",
                   help="--objective ee: per-user minimum rate(s) R_min in bit/s/Hz (default 3)")
    p.add_argument("--cells", type=int, default=1,
                   help="cells M (default 1); M > 1: coordinated beamforming P2, mrt/zf/rzf per cell")
    p.add_argument("--inter-cell-gain", type=float, default=1.0,
                   help="--cells > 1: inter-cell links drawn CN(0, gain I) (default 1: as strong as own-cell links)")
    p.add_argument("--samples", type=int, default=100, help="test channels per SNR (default 100, as the paper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", nargs="+", default=[], metavar="PATH",
                   help="weights file(s) for the learned methods (each file names its precoder)")
    p.add_argument("--wmmse-tol", type=float, default=1e-6, help="WMMSE: stop when a step gains < tol*SE")
    p.add_argument("--wmmse-max-iter", type=int, default=500, help="WMMSE iteration cap (default 500)")
    p.add_argument("--json", default=None, metavar="PATH", help="write config and results as JSON")
    p.set_defaults(func=run)
    return p


def _fail(msg: str) -> int:
    return _args.fail("precode", msg)


def run(args: argparse.Namespace) -> int:
    import torch

    from mimo_fast.precode import classical, energy, metrics, multicell, weights
    from mimo_fast.precode.wmmse import wmmse

    from mimo_fast import outputs

    if args.json:
        try:   # checked (folder created) before any work; written atomically at the end
            outputs.check_file(args.json, "--json")
        except outputs.OutputPathError as exc:
            return _fail(str(exc))
    if any(not -100 <= s <= 200 for s in args.snr):   # also NaN and +-inf
        return _fail(f"--snr: give finite SNR points in [-100, 200] dB, got {args.snr}")
    mc = args.cells > 1
    is_ee = args.objective == "ee"
    r_mins = args.r_min if is_ee else [None]

    if is_ee and (mc or "vanilla-gnn" in args.method):
        return _fail("--objective ee with --cells > 1 or --method vanilla-gnn is not in this version "
                     "(single-cell model-gnn only)")
    if is_ee and (args.k > args.n or any(not r >= 0 for r in args.r_min)):
        return _fail(f"--objective ee needs --k <= --n (ZF-Dinkelbach reference) and --r-min >= 0, got n={args.n}, "
                     f"k={args.k}, r_min={args.r_min}")
    if "zf-dinkelbach" in args.method and not is_ee:
        return _fail("--method zf-dinkelbach is the EE baseline: use it with --objective ee")
    if args.n < 1 or args.k < 1 or args.samples < 1 or args.cells < 1:
        return _fail(f"--n, --k, --samples and --cells must be positive, got {args.n}, {args.k}, {args.samples}, "
                     f"{args.cells}")
    if args.cells > 1 and "vanilla-gnn" in args.method:
        return _fail("--method vanilla-gnn with --cells > 1 is not in this version")
    if not 0 < args.inter_cell_gain <= 1:
        return _fail(f"--inter-cell-gain must be in (0, 1], got {args.inter_cell_gain}")
    if "zf" in args.method and args.k > args.n:
        return _fail(f"--method zf needs --k <= --n (got n={args.n}, k={args.k})")
    try:
        given = {}
        for path in args.weights:
            model = weights.load(path)
            given[model.name.removesuffix("-mc").removesuffix("-ee")] = (model, path)
            if (model.name == "model-gnn-mc") != (args.cells > 1):
                return _fail(f"--weights {path} holds a {model.name} precoder, which does not fit --cells {args.cells}")
            if (model.name == "model-gnn-ee") != is_ee:
                return _fail(f"--weights {path} holds a {model.name} precoder, which does not fit "
                             f"--objective {args.objective}")
        models = {}
        for snr in args.snr:
            for r_min in r_mins:
                for name in (m for m in args.method if m in LEARNED):
                    if name in given:
                        models[name, snr, r_min] = given[name]
                    else:
                        path = weights.find_shipped(name, args.n, args.k, snr, args.cells, r_min)
                        models[name, snr, r_min] = (weights.load(path), str(path))
    except ValueError as exc:
        return _fail(str(exc))

    results = []
    print(f"precode M={args.cells} N={args.n} K={args.k}, {args.samples} channels per SNR, seed {args.seed}")
    print(f"{'method':<13} {'SNR dB':>7} {'SE b/s/Hz':>10} {'ratio WMMSE':>12} {'seconds':>9}"
          + (f" {'R_min':>5} {'EE b/J':>8} {'EE ratio':>9} {'CSR':>8}" if is_ee else ""))
    for i, snr in enumerate(args.snr):
        g = torch.Generator().manual_seed(args.seed * 1000 + i)
        nv = metrics.noise_var(snr)
        if mc:
            H = multicell.draw_channels_mc(args.samples, args.cells, args.n, args.k, generator=g,
                                           inter_gain=args.inter_cell_gain)
            reference, sum_se, power = multicell.wmmse_mc, multicell.sum_se_mc, lambda V: V.abs().square().sum((-2, -1))
            single = lambda f, *a: multicell.per_cell(f, H, *a)
        else:
            H = metrics.draw_channels(args.samples, args.n, args.k, generator=g)
            reference, sum_se, power = wmmse, metrics.sum_se, metrics.transmit_power
            single = lambda f, *a: f(H, *a)
        t = time.perf_counter()
        Vw, info = reference(H, nv, tol=args.wmmse_tol, max_iter=args.wmmse_max_iter)
        t_w = time.perf_counter() - t
        se_w = sum_se(H, Vw, nv)
        for r_min in r_mins:
            if is_ee:                               # the EE reference: ZF-Dinkelbach
                t = time.perf_counter()
                Vd, dinfo = energy.zf_dinkelbach(H, nv, r_min)
                t_d = time.perf_counter() - t
                ee_d = metrics.ee(H, Vd, nv)
            for name in args.method:
                extra = {}
                if name == "wmmse":
                    V, sec = Vw, t_w
                    extra = {"iterations": info.iterations, "converged": float(info.converged.double().mean())}
                elif name == "zf-dinkelbach":
                    V, sec = Vd, t_d
                    extra = {"iterations": dinfo.iterations, "converged": float(dinfo.converged.double().mean())}
                else:
                    t = time.perf_counter()
                    with torch.no_grad():
                        if name == "mrt":
                            V = single(classical.mrt)
                        elif name == "zf":
                            V = single(classical.zf)
                        elif name == "rzf":
                            V = single(classical.rzf, nv)
                        else:
                            model, path = models[name, snr, r_min]
                            V = model(H)
                            extra = {"weights": str(path)}
                    sec = time.perf_counter() - t
                se = sum_se(H, V, nv)
                row = {"method": name, "n": args.n, "k": args.k, "snr_db": snr, "se": float(se.mean()),
                       "se_ratio_wmmse": metrics.se_ratio(se, se_w), "seconds": sec,
                       "power_max": float(power(V).max()), **extra}
                if mc:
                    row["cells"] = args.cells
                line = f"{name:<13} {snr:>7g} {row['se']:>10.3f} {100 * row['se_ratio_wmmse']:>11.2f}% {sec:>9.4f}"
                if is_ee:
                    e = metrics.ee(H, V, nv)
                    row.update(r_min=r_min, ee=float(e.mean()), ee_ratio=energy.ee_ratio(e, ee_d),
                               constraint_satisfaction=metrics.constraint_satisfaction(metrics.rates(H, V, nv), r_min),
                               power_mean=float(power(V).mean()))
                    line += (f" {r_min:>5g} {row['ee']:>8.4f} {100 * row['ee_ratio']:>8.2f}% "
                             f"{100 * row['constraint_satisfaction']:>7.2f}%")
                results.append(row)
                print(line)
    if args.json:
        config = {"n": args.n, "k": args.k, "snr_db": args.snr, "methods": args.method, "objective": args.objective,
                  "r_min": args.r_min if is_ee else None,
                  "cells": args.cells, "inter_cell_gain": args.inter_cell_gain, "samples": args.samples,
                  "seed": args.seed, "weights": args.weights,
                  "wmmse_tol": args.wmmse_tol, "wmmse_max_iter": args.wmmse_max_iter,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}
        outputs.write_json(args.json, {"config": config, "results": results})
    return 0


__all__ = ["add_parser", "run", "METHODS", "LEARNED"]
