"""The three ops on a GPU: the `triton` and `cuda` backends against plain PyTorch.
Skipped without CUDA (the module imports without a GPU, for the session script's checks).

Implementations (float32, CUDA tensors):
  naive      the formula as first written (MPNN: concatenate every pair and run the MLP;
             EP: torch.linalg.inv; AMP: complex matmuls with |H|^2 formed twice)
  careful    hand-optimised eager PyTorch (MPNN: first layer split per node, sum before
             layer 3 for out_act="none"; EP: Cholesky + triangular solves; AMP: |H|^2 once,
             batched matvecs)
  compiled   torch.compile(careful, mode="max-autotune"); by default forward only and only
             at the target shapes (TARGETS below: compiling with autotuning costs ~10-30 s per
             graph); MIMO_FAST_GPU_BENCH_COMPILED=all compiles every shape and pass
  linalg     EP only: the cuSOLVER path, torch.linalg.cholesky + torch.cholesky_solve +
             torch.cholesky_inverse
  reference  backend="reference" (the package's pure-PyTorch op)
  triton     backend="triton";  cuda: backend="cuda" when that backend can serve the op;
             both run inside ops.trusted_inputs(), i.e. without the per-call value checks
             (NaN/inf, variances > 0) -- plain PyTorch checks nothing either
  triton-checked / cuda-checked (fwd only): the same with the value checks on, as a user
             calling the op directly gets it: the difference is the checks' cost
Passes: "fwd" (forward only) and "fwd+bwd" (forward, then backward of a sum of squares).
Every implementation's forward answer is checked against the reference once before
timing (a wrong answer fails the case: no time is recorded); torch.cuda.synchronize()
runs inside the timed function. extra_info records TFLOP/s (useful flops, formulas in
*_flops_bytes) and GB/s of the minimum traffic (each input read once, each output
written once), both for the forward and scaled x3 / x2 for fwd+bwd.

Shapes (the foundation's): MPNN S1 B1024 N16 H128/64 in both out_act forms ("S1" is
"none", "S1-relu" the ReLU after the last layer), S2 B256 N64 H16/8, S3 B32 N256 H64/32
(F=16, E=2, Fo=16 as in the CPU benchmark); EP B4096 K16 and B1024 K64; AMP B256 64x64
and B16 1024x1024. MIMO_FAST_GPU_BENCH_SHAPES=S1,S1-relu,... keeps only those shapes
(bench/gpu_session.sh cuts S2 to fit its time budget). The sizes are mimo_fast.bench.shapes'.

Every timed case is also appended, as one JSON line, to the file named by
MIMO_FAST_GPU_BENCH_RECORDS (when set) the moment it finishes, so a run killed by a time
limit keeps what it measured; `python bench/report.py gpu` reads those lines or pytest-benchmark's
JSON.

Run: pytest bench/bench_gpu.py --benchmark-only --benchmark-json bench/results/<gpu>/gpu_<gpu>.json
     python bench/report.py bench/results/<gpu>/gpu_<gpu>.json > bench/results/<gpu>/gpu_<gpu>.md
(<gpu>: e.g. h100; bash bench/gpu_session.sh runs it with the tests and writes the summary)
"""
from __future__ import annotations

import functools
import json
import os

import pytest
import torch

from mimo_fast.bench import shapes
from mimo_fast.ops import amp_step, ep_lmmse, mpnn_message_sum, registry, validate
from mimo_fast.bench.baselines import (amp_eager, amp_naive, ep_inv, ep_linalg, ep_triangular,
                                     mpnn_careful, mpnn_careful_relu, mpnn_naive, mpnn_naive_relu)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU benchmarks need one")

DEV = torch.device("cuda")
# the standard shapes (mimo_fast.bench.shapes, shared with `mimo-fast bench`), in the order the
# cases run; "S1-relu" is S1 with out_act="relu". EP stops at K = 64 (the Triton kernel's limit)
MPNN = {k: shapes.MPNN[k.removesuffix("-relu")] for k in ("S1", "S1-relu", "S2", "S3")}  # B, N, F, E, H1, H2, Fo
EP = {k: shapes.EP[k] for k in ("B4096-K16", "B1024-K64")}
AMP = {k: shapes.AMP[k] for k in ("B16-1024x1024", "B256-64x64")}
PASSES = ["fwd", "fwd+bwd"]
#: the issue's targets: the shapes the compiled baseline is always timed at (forward)
TARGETS = {"mpnn": ("S1", "S1-relu"), "ep": ("B4096-K16",), "amp": ("B16-1024x1024",)}
SHAPES_ENV, COMPILED_ENV, RECORDS_ENV = ("MIMO_FAST_GPU_BENCH_SHAPES", "MIMO_FAST_GPU_BENCH_COMPILED",
                                         "MIMO_FAST_GPU_BENCH_RECORDS")


def _gen(seed=0):
    return torch.Generator(device=DEV).manual_seed(seed)


def _backend_ok(op, tensors, name):
    return registry.get_backend(name).refusal(op, tensors, explicit=True)


# ------------------------------------------------------------------ mpnn_message_sum
def mpnn_act(key):
    return "relu" if key.endswith("-relu") else "none"


def mpnn_inputs(key, shape=None):
    B, N, F, E, H1, H2, Fo = shape or MPNN[key]
    g = _gen()
    r = lambda *s, scale=1.0: torch.randn(*s, generator=g, device=DEV) * scale  # noqa: E731
    return [r(B, N, F), r(B, N, N, E), r(H1, 2 * F + E, scale=(2 * F + E) ** -0.5), r(H1, scale=0.1),
            r(H2, H1, scale=H1 ** -0.5), r(H2, scale=0.1), r(Fo, H2, scale=H2 ** -0.5), r(Fo, scale=0.1)]


def mpnn_flops_bytes(key):
    B, N, F, E, H1, H2, Fo = MPNN[key]
    pairs = B * N * (N - 1)
    per_pair = 2 * H1 * H2 + 2 * E * H1 + 2 * H1 + 2 * H2
    if mpnn_act(key) == "relu":          # the last layer runs per message
        flops = pairs * (per_pair + 2 * H2 * Fo + 2 * Fo) + B * N * 4 * F * H1
    else:
        flops = pairs * per_pair + B * N * (4 * F * H1 + 2 * H2 * Fo)
    return flops, 4 * (B * N * F + B * N * N * E + B * N * Fo)


# ------------------------------------------------------------------ ep_lmmse
def ep_inputs(key, shape=None):
    B, K = shape or EP[key]
    g = _gen()
    Hm = torch.randn(B, K + 4, K, generator=g, device=DEV) / (K + 4) ** 0.5
    return [Hm.mT @ Hm, torch.randn(B, K, generator=g, device=DEV),
            torch.rand(B, K, generator=g, device=DEV) + 0.2, torch.randn(B, K, generator=g, device=DEV)]


def ep_flops_bytes(key):
    B, K = EP[key]
    return B * (2 * K**3 // 3 + 4 * K * K), 4 * B * (K * K + 5 * K)   # Cholesky + L^{-1} + products


# ------------------------------------------------------------------ amp_step
def amp_inputs(key, shape=None):
    B, M, N = shape or AMP[key]
    g = _gen()
    c = lambda *s, scale=1.0: torch.complex(torch.randn(*s, generator=g, device=DEV),  # noqa: E731
                                            torch.randn(*s, generator=g, device=DEV)) * scale
    return [c(B, M, N, scale=(2 * M) ** -0.5), c(B, M), c(B, N, scale=0.7),
            torch.rand(B, N, generator=g, device=DEV) * 0.5 + 0.05, c(B, M),
            torch.rand(B, M, generator=g, device=DEV) * 0.5, torch.rand(B, generator=g, device=DEV) * 0.3 + 0.05]


def amp_flops_bytes(key):
    B, M, N = AMP[key]
    return 23 * B * M * N, 8 * B * M * N + 8 * B * (5 * M + 4 * N)   # H read once


# ------------------------------------------------------------------ shared
# op: (shapes, make inputs (key, shape=None), op function, op name, naive, careful, linalg,
#      flops/bytes)
OPS = {
    "mpnn": (MPNN, mpnn_inputs, mpnn_message_sum, "mpnn_message_sum", mpnn_naive, mpnn_careful, None, mpnn_flops_bytes),
    "ep": (EP, ep_inputs, ep_lmmse, "ep_lmmse", ep_inv, ep_triangular, ep_linalg, ep_flops_bytes),
    "amp": (AMP, amp_inputs, amp_step, "amp_step", amp_naive, amp_eager, None, amp_flops_bytes),
}
IMPLS = ["naive", "careful", "compiled", "linalg", "reference", "triton", "cuda", "triton-checked", "cuda-checked"]
_COMPILED = {}


def op_kwargs(op, key):
    """Keyword arguments of the op call for this shape key (the MPNN's out_act)."""
    return {"out_act": mpnn_act(key)} if op == "mpnn" else {}


def baseline(op, key, name):
    """naive / careful for this op and key (the MPNN's ReLU forms for "-relu" keys)."""
    if op == "mpnn" and mpnn_act(key) == "relu":
        return {"naive": mpnn_naive_relu, "careful": mpnn_careful_relu}[name]
    return OPS[op][4] if name == "naive" else OPS[op][5]


def _impl(op, key, name):
    shapes, _, fn, opname, naive, careful, linalg, _ = OPS[op]
    kw = op_kwargs(op, key)
    if name in ("naive", "careful"):
        return baseline(op, key, name)
    if name == "compiled":
        ck = (op, mpnn_act(key) if op == "mpnn" else "")
        if ck not in _COMPILED:
            _COMPILED[ck] = torch.compile(baseline(op, key, "careful"), mode="max-autotune", dynamic=False)
        return _COMPILED[ck]
    if name == "linalg":
        return linalg
    if name.endswith("-checked"):
        return functools.partial(fn, **kw, backend=name[:-len("-checked")])

    def trusted(*a):
        with validate.trusted_inputs():
            return fn(*a, **kw, backend=name)
    return trusted


def _sq_sum(out):
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return sum((o.abs() if o.is_complex() else o).square().sum() for o in outs)


def _wanted_shapes():
    raw = os.environ.get(SHAPES_ENV, "").strip()
    return {s.strip() for s in raw.split(",") if s.strip()} or None


def _compiled_case(op, key, pass_):
    return os.environ.get(COMPILED_ENV, "targets") == "all" or (pass_ == "fwd" and key in TARGETS[op])


def cases():
    want = _wanted_shapes()
    out = []
    for op, spec in OPS.items():
        for key in spec[0]:
            if want is not None and key not in want:
                continue
            for impl in IMPLS:
                for p in PASSES:
                    if impl == "linalg" and spec[6] is None:
                        continue
                    if impl.endswith("-checked") and p != "fwd":
                        continue
                    if impl == "compiled" and not _compiled_case(op, key, p):
                        continue
                    out.append((op, key, impl, p))
    return out


CASES = cases()


def record(benchmark, **info):
    """Put ``info`` into the benchmark's extra_info and append one JSON line (the stats
    too) to $MIMO_FAST_GPU_BENCH_RECORDS, at once: a run killed later keeps this case."""
    benchmark.extra_info.update(info)
    s = benchmark.stats.stats
    rec = dict(info, name=benchmark.name, median_s=s.median, min_s=s.min, mean_s=s.mean,
               stddev_s=s.stddev, rounds=s.rounds)
    path = os.environ.get(RECORDS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return rec


@pytest.mark.parametrize("op,key,impl,pass_", CASES, ids=["-".join(c) for c in CASES])
def test_gpu(benchmark, op, key, impl, pass_):
    shapes, make, fn, opname, *_, flops_bytes = OPS[op]
    args = make(key)
    if impl.split("-")[0] in ("triton", "cuda"):
        why = _backend_ok(opname, tuple(args), impl.split("-")[0])
        if why:
            pytest.skip(f"{impl}: {why}")
    f = _impl(op, key, impl)
    want = fn(*args, **op_kwargs(op, key), backend="reference")
    got = f(*args)
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3 * max(1.0, float(b.abs().max())))
    if pass_ == "fwd+bwd":
        leaves = [a.detach().requires_grad_() if (a.is_floating_point() or a.is_complex()) else a for a in args]

        def run():
            grads = torch.autograd.grad(_sq_sum(f(*leaves)), leaves)
            torch.cuda.synchronize()
            return grads
    else:
        def run():
            out = f(*args)
            torch.cuda.synchronize()
            return out
    run()                                                  # warm-up (compilation, autotuning)
    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=2)
    flops, nbytes = flops_bytes(key)
    scale = (3, 2) if pass_ == "fwd+bwd" else (1, 1)
    best = benchmark.stats.stats.min
    record(benchmark, tflops=scale[0] * flops / best / 1e12, gbps=scale[1] * nbytes / best / 1e9,
           flops=scale[0] * flops, bytes=scale[1] * nbytes, gpu=torch.cuda.get_device_name(), shape=key,
           op=opname, impl=impl, mode=pass_)


# ------------------------------------------------------------------ device peaks
# What the kernels are measured against: the copy bandwidth (bytes read + written by a
# device-to-device copy of 1 GiB) and the IEEE fp32 matmul rate (TF32 off, as the kernels
# must keep fp32 accuracy), both measured here in the same run.
def test_peak_copy(benchmark):
    src = torch.empty(2**28, dtype=torch.float32, device=DEV).normal_()
    dst = torch.empty_like(src)

    def run():
        dst.copy_(src)
        torch.cuda.synchronize()
    run()
    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=2)
    nbytes = 2 * src.numel() * 4
    record(benchmark, gbps=nbytes / benchmark.stats.stats.min / 1e9, bytes=nbytes,
           gpu=torch.cuda.get_device_name(), op="peak", impl="copy", mode="fwd", shape="1GiB")


def test_peak_matmul_fp32(benchmark):
    n = 8192
    a, b = (torch.randn(n, n, device=DEV) for _ in range(2))
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        def run():
            c = a @ b
            torch.cuda.synchronize()
            return c
        run()
        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    record(benchmark, tflops=2 * n**3 / benchmark.stats.stats.min / 1e12, flops=2 * n**3,
           gpu=torch.cuda.get_device_name(), op="peak", impl="matmul-fp32", mode="fwd", shape=f"{n}^3")
