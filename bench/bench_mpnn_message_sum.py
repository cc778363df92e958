"""mpnn_message_sum on the CPU: the fused ``cpu`` backend against plain PyTorch.

Two forms of the op: ``out_act="none"`` (test_mpnn_message_sum) and ``"relu"`` (a ReLU
after the last layer, before the sum: test_mpnn_message_sum_relu, W3 runs per pair).

Implementations (float32, torch's thread count, inputs without a mask):
  naive     concat [node_n, node_j, edge] -> 3-layer MLP on every pair -> masked sum
  careful   first layer split per node (recv + send + edge term), sum before layer 3
            (relu: W2, W3 per pair as 2-D addmm with in-place ReLUs, then the sum)
  compiled  torch.compile(careful)
  reference backend="reference" (the package's pure-PyTorch op, chunked)
  cpu       backend="cpu" (the fused C++ kernel), as users call it (with the op's
            non-finite scans of every input)
  cpu-nocheck  the same with MIMO_FAST_SKIP_VALUE_CHECKS=1 (kernel + glue only)
Shapes (issue 3): S1 B1024 N16 H128/64 (Fo 16; S1fo8: Fo 8), S2 B256 N64 H16/8,
S3 B32 N256 H64/32. Each implementation's answer (and gradients, for fwd+bwd) is checked
against the reference once before timing. extra_info records GFLOP/s (counting valid
pairs, N(N-1) per batch element: 2 H1 H2 + 2 E H1 per pair, + 2 H2 Fo per pair for relu,
plus the per-node layers; x3 for forward+backward) and its fraction of this machine's
SGEMM rate.

Peak memory (S3 forward): a fresh subprocess per implementation (glibc told to mmap every
allocation above 64 KiB so freed memory leaves the RSS), one warm-up call, then the peak
RSS is reset (/proc/self/clear_refs) and the extra peak of one call is VmHWM - VmRSS.

Run (<machine>: a folder per machine under bench/results/, e.g. xeon-2core-avx512):
     pytest bench/bench_mpnn_message_sum.py --benchmark-only -k "not relu" \
        --benchmark-json bench/results/<machine>/mpnn_message_sum_cpu.json
     pytest bench/bench_mpnn_message_sum.py --benchmark-only -k "relu and S1" \
        --benchmark-json bench/results/<machine>/mpnn_message_sum_relu_cpu.json
     python bench/report.py bench/results/<machine>/mpnn_message_sum_relu_cpu.json \
        > bench/results/<machine>/mpnn_message_sum_relu_cpu.md
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest
import torch

from mimo_fast.bench.baselines import mpnn_careful as careful, mpnn_naive as naive
from mimo_fast.bench.baselines import mpnn_careful_relu as careful_relu, mpnn_naive_relu as naive_relu
from mimo_fast.bench import shapes
from mimo_fast.ops import mpnn_message_sum

# B, N, F, E, H1, H2, Fo: the standard shapes (mimo_fast.bench.shapes) and S1 with Fo = 8
SHAPES = {"S1": shapes.MPNN["S1"], **shapes.MPNN_VARIANTS, "S2": shapes.MPNN["S2"], "S3": shapes.MPNN["S3"]}
IMPLS = ["naive", "careful", "compiled", "reference", "cpu", "cpu-nocheck"]


def make_inputs(shape, seed=0):
    """The eight tensors of the standard maker, without a mask (float32, CPU)."""
    *tensors, _ = shapes.mpnn_inputs(*SHAPES[shape], gen=torch.Generator().manual_seed(seed), masked=False)
    return tensors


_compiled = {"none": torch.compile(careful, dynamic=False), "relu": torch.compile(careful_relu, dynamic=False)}


def _cpu_nocheck(*a, out_act="none"):
    old = os.environ.get("MIMO_FAST_SKIP_VALUE_CHECKS")
    os.environ["MIMO_FAST_SKIP_VALUE_CHECKS"] = "1"
    try:
        return mpnn_message_sum(*a, backend="cpu", out_act=out_act)
    finally:
        if old is None:
            del os.environ["MIMO_FAST_SKIP_VALUE_CHECKS"]
        else:
            os.environ["MIMO_FAST_SKIP_VALUE_CHECKS"] = old


def impl_fn(name, out_act="none"):
    relu = out_act == "relu"
    return {
        "cpu-nocheck": lambda *a: _cpu_nocheck(*a, out_act=out_act),
        "naive": naive_relu if relu else naive,
        "careful": careful_relu if relu else careful,
        "compiled": _compiled[out_act],
        "reference": lambda *a: mpnn_message_sum(*a, backend="reference", out_act=out_act),
        "cpu": lambda *a: mpnn_message_sum(*a, backend="cpu", out_act=out_act),
    }[name]


def flops(shape, mode, out_act="none"):
    """Counted FLOPs: per valid pair the edge term and W2 (and W3 for relu), per node the
    first-layer projections (and W3 on the sums for none); x3 for forward + backward."""
    B, N, F, E, H1, H2, Fo = SHAPES[shape]
    pair = 2 * H1 * H2 + 2 * E * H1 + (2 * H2 * Fo if out_act == "relu" else 0)
    node = 2 * (2 * F * H1) + (0 if out_act == "relu" else 2 * H2 * Fo)
    f = B * N * (N - 1) * pair + B * N * node
    return f if mode == "fwd" else 3 * f


_REF_CACHE: dict = {}


def reference_answer(shape, out_act="none"):
    """Output and gradients of the reference backend (autograd through its pair kernels)."""
    key = (shape, out_act)
    if key not in _REF_CACHE:
        leaves = [a.requires_grad_() for a in make_inputs(shape)]
        out = mpnn_message_sum(*leaves, backend="reference", out_act=out_act)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(out, leaves, grad)
        _REF_CACHE[key] = (out.detach(), grad, [g.detach() for g in grads])
    return _REF_CACHE[key]


def assert_close(got, want, what):
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * scale, msg=lambda m: f"{what}: {m}")


def assert_close_grad(got, want, what, tol=1e-3):
    """Gradients in float32 jump where a pre-activation sits within rounding of a ReLU kink
    (a few elements in 1e5 differ by O(1e-1) between any two summation orders), so
    gradients are compared in norm. The relu form has a third kink per pair (p3, Fo of
    them): at S1fo8 one pair's p3 lands on the other side of 0 in careful, compiled and
    cpu (float32) than in the reference, 1.8e-3 in norm for grad edge (cpu in float64
    matches the float64 reference to 1e-14), hence the looser tol for relu."""
    err = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
    assert err < tol, f"{what}: relative error in norm {err:.2e}"


def run_benchmark(benchmark, sgemm_rate, shape, mode, impl, out_act):
    fn = impl_fn(impl, out_act)
    args = make_inputs(shape)
    want, grad, want_grads = reference_answer(shape, out_act)
    what = f"{impl} {shape} {out_act}"
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn(*args)
        assert_close(run(), want, f"{what} forward")
    else:
        leaves = [a.clone().requires_grad_() for a in args]

        def run():
            out = fn(*leaves)
            return out, torch.autograd.grad(out, leaves, grad)
        out, grads = run()
        assert_close(out.detach(), want, f"{what} forward")
        for name, g, w in zip(("node", "edge", "w1", "b1", "w2", "b2", "w3", "b3"), grads, want_grads):
            assert_close_grad(g, w, f"{what} grad {name}", 1e-3 if out_act == "none" else 5e-3)
    suffix = "" if out_act == "none" else " relu"
    benchmark.group = f"mpnn_message_sum{suffix} {shape} {mode}"
    benchmark.extra_info.update(shape=shape, mode=mode, impl=impl, out_act=out_act,
                                sizes=dict(zip("B N F E H1 H2 Fo".split(), SHAPES[shape])),
                                threads=torch.get_num_threads(), sgemm_gflops=round(sgemm_rate, 1))
    if impl.startswith("cpu"):  # the kernel code path auto (or MIMO_FAST_CPU_ISA) runs for this shape
        from mimo_fast import _ext
        from mimo_fast.ops.cpu.mpnn_message_sum import isa_code
        H1, H2 = SHAPES[shape][4:6]
        code = _ext.C.mpnn_message_sum_choose_isa(0, isa_code(), H1, H2)
        benchmark.extra_info.update(isa=_ext.C.mpnn_message_sum_isa(code))
    benchmark(run)
    med = benchmark.stats.stats.median
    gf = flops(shape, mode, out_act) / med / 1e9
    benchmark.extra_info.update(gflops=round(gf, 2), fraction_of_sgemm=round(gf / sgemm_rate, 3))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("shape", ["S1", "S2", "S3"])
def test_mpnn_message_sum(benchmark, sgemm_rate, shape, mode, impl):
    run_benchmark(benchmark, sgemm_rate, shape, mode, impl, "none")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_mpnn_message_sum_relu(benchmark, sgemm_rate, shape, mode, impl):
    run_benchmark(benchmark, sgemm_rate, shape, mode, impl, "relu")


_MEMORY_SCRIPT = r"""
import gc, json, sys, torch
sys.path.insert(0, {bench_dir!r})
import bench_mpnn_message_sum as m
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
args = m.make_inputs("S3")
fn = m.impl_fn({impl!r})
with torch.no_grad():
    fn(*args)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    out = fn(*args)
    peak = status("VmHWM")
print(json.dumps({{"extra_peak_bytes": peak - base, "base_rss_bytes": base}}))
"""


def measure_peak(impl):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    script = _MEMORY_SCRIPT.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), impl=impl)
    # cwd elsewhere: `python -c` puts the cwd on sys.path, and the source tree has no _C
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True,
                         cwd=tempfile.gettempdir())
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("impl", IMPLS)
def test_mpnn_message_sum_s3_peak_memory(benchmark, impl):
    """Timing here is the whole subprocess (meaningless); extra_info holds the memory."""
    benchmark.group = "mpnn_message_sum S3 forward peak memory (subprocess)"
    result = benchmark.pedantic(measure_peak, args=(impl,), rounds=1, iterations=1)
    benchmark.extra_info.update(impl=impl, shape="S3", method="VmHWM-VmRSS after clear_refs, MALLOC_MMAP_THRESHOLD_=65536",
                                **result, extra_peak_mib=round(result["extra_peak_bytes"] / 2**20, 1))
