"""Where an op's GPU time goes, and what a call costs the host. For diagnosis, not a
benchmark of record (a tool, hence tools/ and not bench/); needs a CUDA GPU (imports without one).

Breakdown (default; bench/bench_gpu.py's cases and shapes, --shapes to cut them): the whole op (value
checks on), the op with checks off (``trusted_inputs``), the backend's glue called
directly (no custom-op dispatch), and the kernels alone (torch.profiler's CUDA time).

--overhead: the per-call cost of the Python layer at small shapes (SMALL below: the
kernels then take a few microseconds, so what is left is value checks, torch.library
dispatch and launch glue), per backend:
  op            the op as a user calls it (value checks on: they synchronise)
  op-trusted    inside ``ops.trusted_inputs()`` (no checks, no synchronisation)
  glue          the backend's functions called directly (no custom-op dispatch)
  graph         a CUDA graph (``torch.cuda.CUDAGraph``) holding one op-trusted forward,
                replayed; its output after a replay is checked against an eager call
  graph-fwd+bwd the same for forward + ``torch.autograd.grad`` of a sum of squares
  kernels       the GPU time of the kernels (torch.profiler), for comparison
and for plain PyTorch ("careful" eager) the eager call and its CUDA graph. Two times per
row: ``pipelined`` = wall time of 200 back-to-back calls and one synchronisation, per
call (the host's cost when the GPU keeps up), ``synced`` = median of one call followed
by ``torch.cuda.synchronize()`` (latency). A capture that fails is reported, not fatal.

    python tools/gpu_profile.py [--backends triton cuda] [--ops ep amp mpnn] [--shapes S1,B4096-K16]
    python tools/gpu_profile.py --overhead --no-breakdown --json overhead.json
"""
from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import signal
import statistics
import sys
import time
import traceback

import torch

# the op table (shapes, input makers, baselines) is bench/bench_gpu.py's: one list of cases
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
from bench_gpu import OPS, baseline, op_kwargs  # noqa: E402

from mimo_fast.ops import registry, validate  # noqa: E402

#: small shapes for the per-call overhead (a "-relu" key runs the MPNN with out_act="relu")
SMALL = {"mpnn": {"B1-N4": (1, 4, 4, 2, 16, 16, 4), "B1-N4-relu": (1, 4, 4, 2, 16, 16, 4)},
         "ep": {"B1-K4": (1, 4)}, "amp": {"B1-4x4": (1, 4, 4)}}
ROWS: list = []          # overhead rows, for --json
BREAKDOWN: list = []     # breakdown rows, for --json


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


def glue_fn(op, key, be, args):
    """The backend's implementation called directly: no custom op, no value checks. For the
    MPNN, the op module's shared forward (projections, last layer) on the backend's pair
    kernels, as the custom op runs it."""
    impl = registry.get_backend(be).ops[OPS[op][3]]
    if op == "mpnn":
        mod = importlib.import_module("mimo_fast.ops.mpnn_message_sum")   # the module, not the function
        act = op_kwargs(op, key)["out_act"]
        return lambda: mod.forward(impl, *args, None, act)
    return lambda: impl.forward(*args)


def op_fn(op, key, be, args, trusted):
    fn, kw = OPS[op][2], op_kwargs(op, key)
    if not trusted:
        return lambda: fn(*args, **kw, backend=be)

    def call():
        with validate.trusted_inputs():
            return fn(*args, **kw, backend=be)
    return call


# ------------------------------------------------------------------ breakdown
def breakdown(ops, backends, shapes):
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}")
    print("| op | shape | backend | op ms | op trusted ms | glue ms | kernels ms | top kernels (us/call) |")
    print("|---|---|---|---|---|---|---|---|")
    for op in ops:
        table, make, fn, opname = OPS[op][:4]
        for key in table:
            if shapes and key not in shapes:
                continue
            a = make(key)
            careful = baseline(op, key, "careful")
            t = timed(lambda: careful(*a))
            print(f"| {op} | {key} | careful | {t:.3f} | | | | |")
            BREAKDOWN.append(dict(op=op, shape=key, backend="careful", op_ms=t))
            for be in backends:
                why = registry.get_backend(be).refusal(opname, tuple(a), explicit=True)
                if why:
                    print(f"| {op} | {key} | {be} | skipped: {why} |")
                    BREAKDOWN.append(dict(op=op, shape=key, backend=be, skipped=why))
                    continue
                try:
                    full = timed(op_fn(op, key, be, a, False))
                    trusted = timed(op_fn(op, key, be, a, True))
                    glue = glue_fn(op, key, be, a)
                    g = timed(glue)
                except Exception as exc:  # noqa: BLE001  (report and go on)
                    print(f"| {op} | {key} | {be} | failed: {type(exc).__name__}: {str(exc)[:200]} |")
                    BREAKDOWN.append(dict(op=op, shape=key, backend=be, error=f"{type(exc).__name__}: {exc}"[:500]))
                    if not _context_ok():
                        return
                    continue
                try:
                    kms, top = kernel_ms(glue)
                except Exception as exc:  # noqa: BLE001  (the profiler is extra)
                    kms, top = float("nan"), [(0.0, f"profiler failed: {type(exc).__name__}")]
                tops = "; ".join(f"{k[:40]} {t:.0f}" for t, k in top)
                print(f"| {op} | {key} | {be} | {full:.3f} | {trusted:.3f} | {g:.3f} | {kms:.3f} | {tops} |")
                BREAKDOWN.append(dict(op=op, shape=key, backend=be, op_ms=full, trusted_ms=trusted, glue_ms=g,
                                      kernels_ms=kms, top=tops))


# ------------------------------------------------------------------ per-call overhead
def per_call(fn, n=200, m=50):
    """(pipelined, synced) microseconds per call, see the module docstring."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    pipelined = (time.perf_counter() - t0) / n
    ts = []
    for _ in range(m):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return pipelined * 1e6, statistics.median(ts) * 1e6


def capture(fn):
    """A CUDA graph of one call of ``fn`` (warmed up on a side stream first, as
    torch.cuda.graphs requires) and the call's static outputs."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g, out


def _flat(out):
    return [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(o, torch.Tensor)]


def _context_ok():
    try:
        torch.cuda.synchronize()
        return True
    except Exception:  # noqa: BLE001
        print("the CUDA context is unusable after this error: stopping")
        return False


def _row(op, key, be, variant, fn=None, graph_of=None):
    """Time one variant and append its row; ``graph_of``: capture that function instead
    and time the replays (checked against an eager call)."""
    row = dict(op=op, shape=key, backend=be, variant=variant)
    try:
        if graph_of is not None:
            g, static = capture(graph_of)
            g.replay()
            torch.cuda.synchronize()
            want = _flat(graph_of())
            got = _flat(static)
            bad = [i for i, (x, w) in enumerate(zip(got, want))
                   if not torch.allclose(x, w, rtol=1e-4, atol=1e-5 * max(1.0, float(w.abs().max())))]
            row["ok"] = not bad and len(got) == len(want)
            if bad:
                row["error"] = f"replayed outputs {bad} differ from an eager call"
            fn = g.replay
        row["us_pipelined"], row["us_synced"] = per_call(fn)
        row.setdefault("ok", True)
    except Exception as exc:  # noqa: BLE001  (a failed capture is a finding, not the end)
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])
        traceback.print_exc(limit=2)
    ROWS.append(row)
    us = (f"{row['us_pipelined']:9.1f} {row['us_synced']:9.1f}" if "us_pipelined" in row else f"{'-':>9s} {'-':>9s}")
    print(f"| {op} | {key} | {be} | {variant} | {us.split()[0]} | {us.split()[1]} | "
          f"{'ok' if row['ok'] else 'FAIL: ' + row.get('error', '')} |", flush=True)
    return row


def overhead(ops, backends):
    print(f"\nper-call overhead at small shapes, {torch.cuda.get_device_name()}, torch {torch.__version__} "
          "(us per call; pipelined = 200 calls then one sync; synced = one call + sync, median)")
    print("| op | shape | backend | variant | us pipelined | us synced | status |")
    print("|---|---|---|---|---|---|---|")
    for op in ops:
        make, opname = OPS[op][1], OPS[op][3]
        for key, shape in SMALL[op].items():
            a = make(key, shape)
            careful = baseline(op, key, "careful")
            _row(op, key, "eager", "careful", lambda: careful(*a))
            _row(op, key, "eager", "careful-graph", graph_of=lambda: careful(*a))
            for be in backends:
                why = registry.get_backend(be).refusal(opname, tuple(a), explicit=True)
                if why:
                    ROWS.append(dict(op=op, shape=key, backend=be, variant="all", ok=False, skipped=why))
                    print(f"| {op} | {key} | {be} | - | - | - | skipped: {why} |")
                    continue
                _row(op, key, be, "op", op_fn(op, key, be, a, False))
                trusted = op_fn(op, key, be, a, True)
                _row(op, key, be, "op-trusted", trusted)
                _row(op, key, be, "glue", glue_fn(op, key, be, a))
                _row(op, key, be, "graph", graph_of=trusted)
                leaves = [t.detach().clone().requires_grad_() if (t.is_floating_point() or t.is_complex()) else t
                          for t in a]
                fb_call = op_fn(op, key, be, leaves, True)

                def fwd_bwd(call=fb_call, leaves=leaves):
                    out = _flat(call())
                    loss = sum((o.abs() if o.is_complex() else o).square().sum() for o in out if o.is_floating_point()
                               or o.is_complex())
                    return torch.autograd.grad(loss, leaves)
                _row(op, key, be, "graph-fwd+bwd", graph_of=fwd_bwd)
                try:
                    kms, _ = kernel_ms(glue_fn(op, key, be, a), reps=20)
                    ROWS.append(dict(op=op, shape=key, backend=be, variant="kernels", ok=True,
                                     us_pipelined=kms * 1e3, us_synced=kms * 1e3))
                    print(f"| {op} | {key} | {be} | kernels | {kms * 1e3:.1f} | (GPU time) | ok |")
                except Exception as exc:  # noqa: BLE001
                    print(f"| {op} | {key} | {be} | kernels | - | - | FAIL: {type(exc).__name__} |")
                if not _context_ok():
                    return


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=["triton", "cuda", "reference"])
    ap.add_argument("--ops", nargs="+", default=["ep", "amp", "mpnn"], choices=list(OPS))
    ap.add_argument("--shapes", default="", help="comma-separated shape keys for the breakdown (default: all)")
    ap.add_argument("--overhead", action="store_true", help="the per-call overhead at small shapes, CUDA graphs too")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--json", default="", help="write the rows here as JSON")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch")
    shapes = {s for s in args.shapes.split(",") if s}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))   # a time limit still writes --json
    try:
        if args.overhead:
            overhead(args.ops, [b for b in args.backends if b != "reference"])
        if not args.no_breakdown:
            breakdown(args.ops, args.backends, shapes)
    finally:
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(
                {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "overhead": ROWS,
                 "breakdown": BREAKDOWN}, indent=1))


if __name__ == "__main__":
    main()
