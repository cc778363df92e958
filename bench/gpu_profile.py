"""Where an op's GPU time goes: the whole op (value checks on), the op with checks off
(``trusted_inputs``), the backend's glue called directly (no custom-op dispatch), and
the kernels alone (torch.profiler's CUDA time). Prints a table; for diagnosis, not a
benchmark of record.

    python bench/gpu_profile.py [--backends triton cuda] [--ops ep amp mpnn]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import pathlib

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_gpu import AMP, EP, MPNN, OPS  # noqa: E402

from mimo_fast.ops import registry, validate  # noqa: E402


def timed(fn, reps=30):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def kernel_ms(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    total = sum(e.device_time_total for e in prof.key_averages())   # microseconds
    names = sorted(((e.device_time_total / reps, e.key) for e in prof.key_averages()), reverse=True)[:3]
    return total / reps / 1e3, names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", nargs="+", default=["triton", "cuda", "reference"])
    ap.add_argument("--ops", nargs="+", default=["ep", "amp", "mpnn"])
    args = ap.parse_args()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}")
    print("| op | shape | backend | op ms | op trusted ms | glue ms | kernels ms | top kernels (us/call) |")
    print("|---|---|---|---|---|---|---|---|")
    for op in args.ops:
        shapes, make, fn, opname, naive, careful, *_ = OPS[op]
        for key in shapes:
            a = make(key)
            print(f"| {op} | {key} | careful | {timed(lambda: careful(*a)):.3f} | | | | |")
            for be in args.backends:
                why = registry.get_backend(be).refusal(opname, tuple(a), explicit=True)
                if why:
                    print(f"| {op} | {key} | {be} | skipped: {why} |")
                    continue
                impl = registry.get_backend(be).ops[opname]
                ga = a + [None] if op == "mpnn" else a      # the glue takes mpnn's mask positionally
                full = timed(lambda: fn(*a, backend=be))
                with validate.trusted_inputs():
                    trusted = timed(lambda: fn(*a, backend=be))
                glue = timed(lambda: impl.forward(*ga))
                kms, top = kernel_ms(lambda: impl.forward(*ga))
                tops = "; ".join(f"{k[:40]} {t:.0f}" for t, k in top)
                print(f"| {op} | {key} | {be} | {full:.3f} | {trusted:.3f} | {glue:.3f} | {kms:.3f} | {tops} |")


if __name__ == "__main__":
    main()
