"""``mimo-fast precode``: evaluate precoders on fresh channels (DESIGN.md).

Draws ``--samples`` channels h_k ~ CN(0, I_N) per SNR (seeded), runs each method, and
reports the mean sum SE (bit/s/Hz), the SE ratio against WMMSE (mean over samples of
SE / SE_WMMSE; WMMSE is always run as the reference) and the wall-clock of the method on
the whole batch. Learned methods load the shipped weights for (N, K, SNR) or ``--weights``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

METHODS = ("mrt", "zf", "rzf", "wmmse", "vanilla-gnn", "model-gnn")
LEARNED = ("vanilla-gnn", "model-gnn")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("precode", help="evaluate downlink precoders (SE, ratio to WMMSE, time)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, required=True, help="base-station antennas N")
    p.add_argument("--k", type=int, required=True, help="single-antenna users K")
    p.add_argument("--snr", type=float, nargs="+", required=True, help="SNR = P_max / sigma0^2 in dB")
    p.add_argument("--method", nargs="+", required=True, choices=METHODS, metavar="NAME",
                   help="one or more of: " + " ".join(METHODS))
    p.add_argument("--objective", choices=("se", "ee"), default="se", help="se (default); ee is not in this version")
    p.add_argument("--cells", type=int, default=1,
                   help="cells M (default 1); M > 1: coordinated beamforming P2, mrt/zf/rzf per cell")
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
    print(f"mimo-fast precode: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    import torch

    from mimo_fast.precode import classical, metrics, multicell, weights
    from mimo_fast.precode.wmmse import wmmse

    mc = args.cells > 1

    if args.objective != "se":
        return _fail("--objective ee is not in this version (only the sum-SE problem P1 is implemented)")
    if args.n < 1 or args.k < 1 or args.samples < 1 or args.cells < 1:
        return _fail(f"--n, --k, --samples and --cells must be positive, got {args.n}, {args.k}, {args.samples}, "
                     f"{args.cells}")
    if args.cells > 1 and "vanilla-gnn" in args.method:
        return _fail("--method vanilla-gnn with --cells > 1 is not in this version")
    if "zf" in args.method and args.k > args.n:
        return _fail(f"--method zf needs --k <= --n (got n={args.n}, k={args.k})")
    try:
        given = {}
        for path in args.weights:
            model = weights.load(path)
            given[model.name.removesuffix("-mc")] = (model, path)
            if (model.name == "model-gnn-mc") != (args.cells > 1):
                return _fail(f"--weights {path} holds a {model.name} precoder, which does not fit --cells {args.cells}")
        models = {}
        for snr in args.snr:
            for name in (m for m in args.method if m in LEARNED):
                if name in given:
                    models[name, snr] = given[name]
                else:
                    path = weights.find_shipped(name, args.n, args.k, snr, args.cells)
                    models[name, snr] = (weights.load(path), str(path))
    except ValueError as exc:
        return _fail(str(exc))

    results = []
    print(f"precode M={args.cells} N={args.n} K={args.k}, {args.samples} channels per SNR, seed {args.seed}")
    print(f"{'method':<12} {'SNR dB':>7} {'SE b/s/Hz':>10} {'ratio WMMSE':>12} {'seconds':>9}")
    for i, snr in enumerate(args.snr):
        g = torch.Generator().manual_seed(args.seed * 1000 + i)
        nv = metrics.noise_var(snr)
        if mc:
            H = multicell.draw_channels_mc(args.samples, args.cells, args.n, args.k, generator=g)
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
        for name in args.method:
            extra = {}
            if name == "wmmse":
                V, sec = Vw, t_w
                extra = {"iterations": info.iterations, "converged": float(info.converged.double().mean())}
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
                        model, path = models[name, snr]
                        V = model(H)
                        extra = {"weights": str(path)}
                sec = time.perf_counter() - t
            se = sum_se(H, V, nv)
            row = {"method": name, "n": args.n, "k": args.k, "snr_db": snr, "se": float(se.mean()),
                   "se_ratio_wmmse": metrics.se_ratio(se, se_w), "seconds": sec,
                   "power_max": float(power(V).max()), **extra}
            if mc:
                row["cells"] = args.cells
            results.append(row)
            print(f"{name:<12} {snr:>7g} {row['se']:>10.3f} {100 * row['se_ratio_wmmse']:>11.2f}% {sec:>9.4f}")
    if args.json:
        config = {"n": args.n, "k": args.k, "snr_db": args.snr, "methods": args.method, "objective": args.objective,
                  "cells": args.cells, "samples": args.samples, "seed": args.seed, "weights": args.weights,
                  "wmmse_tol": args.wmmse_tol, "wmmse_max_iter": args.wmmse_max_iter,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}
        with open(args.json, "w") as f:
            json.dump({"config": config, "results": results}, f, indent=2)
    return 0


__all__ = ["add_parser", "run", "METHODS"]
