"""ep_lmmse on the CPU, float32: the plain torch.linalg path (cholesky + cholesky_solve +
cholesky_inverse diagonal; autograd for backward), backend 'reference' and backend 'cpu',
forward and forward+backward. Answers are checked against the reference before timing.

    pytest bench/bench_ep_lmmse.py --benchmark-only --benchmark-json bench/results/<machine>/ep_lmmse_cpu.json
    python bench/report.py bench/results/<machine>/ep_lmmse_cpu.json > bench/results/<machine>/ep_lmmse_cpu.md

(<machine>: a folder per machine under bench/results/, e.g. xeon-2core-avx512.)
"""
import pytest
import torch

from mimo_fast.bench import shapes
from mimo_fast.bench.baselines import ep_linalg
from mimo_fast.ops import ep_lmmse

SHAPES = list(shapes.EP.values()) + list(shapes.EP_VARIANTS.values())  # (B, K): B4096 K16, B1024 K64, B64 K256; B16384 K8, B8192 K12
IMPLS = ["torch", "reference", "cpu"]


def inputs(B, K):
    g = torch.Generator().manual_seed(0)
    Hm = torch.randn(B, 2 * K, K, generator=g)
    gram = Hm.mT @ Hm / (2 * K)
    return [gram, torch.randn(B, K, generator=g), torch.rand(B, K, generator=g) + 0.5, torch.randn(B, K, generator=g)]




def call(impl, ins):
    return ep_linalg(*ins) if impl == "torch" else ep_lmmse(*ins, backend=impl)


def step(impl, ins, backward):
    if not backward:
        return call(impl, ins)
    ps = [t.detach().requires_grad_() for t in ins]
    mean, var = call(impl, ps)
    (mean.sum() + var.sum()).backward()
    return mean, var, ps[0].grad


def rounds(impl, K):
    # Enough rounds for the medians of both sides of the ratio: torch's own time wandered by
    # 30% between runs of 3 rounds (K64: 49 to 63 ms), which moved the ratio more than any
    # kernel change. About 2 s per torch cell.
    if impl == "cpu":
        return 100 if K <= 64 else 30
    return 30 if K <= 16 else {64: 15, 256: 5}[K]


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,K", SHAPES, ids=[f"B{b}-K{k}" for b, k in SHAPES])
def test_ep_lmmse(benchmark, B, K, impl, backward):
    ins = inputs(B, K)
    got = step(impl, ins, backward)
    want = step("reference", ins, backward)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3 * float(b.abs().max()))
    benchmark.group = f"ep_lmmse B{B} K{K} {'fwd+bwd' if backward else 'fwd'}"
    benchmark.extra_info.update(op="ep_lmmse", shape=f"B{B} K{K}", impl=impl,
                                mode="fwd+bwd" if backward else "fwd", threads=torch.get_num_threads())
    benchmark.pedantic(step, args=(impl, ins, backward), rounds=rounds(impl, K), iterations=1,
                       warmup_rounds=1)
