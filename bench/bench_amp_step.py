"""amp_step on the CPU, complex64: the eager formula, torch.compile of it, backend
'reference' and backend 'cpu', forward and forward+backward. Answers are checked against
the reference before timing.

    pytest bench/bench_amp_step.py --benchmark-only --benchmark-json bench/results/<machine>/amp_step_cpu.json
    python bench/report.py bench/results/<machine>/amp_step_cpu.json > bench/results/<machine>/amp_step_cpu.md

(<machine>: a folder per machine under bench/results/, e.g. xeon-2core-avx512.)
"""
import functools

import pytest
import torch

from mimo_fast.bench import shapes
from mimo_fast.bench.baselines import amp_eager
from mimo_fast.ops import amp_step

SHAPES = list(shapes.AMP.values())   # (B, M, N): B256 64x64, B16 1024x1024
IMPLS = ["eager", "compile", "reference", "cpu"]




@functools.lru_cache(maxsize=None)
def compiled():
    return torch.compile(amp_eager, dynamic=False)


def inputs(B, M, N):
    g = torch.Generator().manual_seed(0)
    c = lambda *s: torch.randn(*s, generator=g, dtype=torch.complex64)
    return [c(B, M, N) / M**0.5, c(B, M), c(B, N), torch.rand(B, N, generator=g), c(B, M),
            torch.rand(B, M, generator=g), torch.rand(B, generator=g) + 0.1]


def call(impl, ins):
    if impl == "eager":
        return amp_eager(*ins)
    if impl == "compile":
        return compiled()(*ins)
    return amp_step(*ins, backend=impl)


def step(impl, ins, backward):
    if not backward:
        return call(impl, ins)
    ps = [t.detach().requires_grad_() for t in ins]
    r, Sigma, z, V = call(impl, ps)
    (r.real.sum() + r.imag.sum() + Sigma.sum() + z.real.sum() + V.sum()).backward()
    return r, Sigma, z, V, ps[0].grad, ps[2].grad


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,M,N", SHAPES, ids=[f"B{b}-{m}x{n}" for b, m, n in SHAPES])
def test_amp_step(benchmark, B, M, N, impl, backward):
    ins = inputs(B, M, N)
    got = step(impl, ins, backward)
    want = step("reference", ins, backward)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3 * float(b.abs().max()))
    benchmark.group = f"amp_step B{B} {M}x{N} {'fwd+bwd' if backward else 'fwd'}"
    benchmark.extra_info.update(op="amp_step", shape=f"B{B} {M}x{N}", impl=impl,
                                mode="fwd+bwd" if backward else "fwd", threads=torch.get_num_threads())
    benchmark.pedantic(step, args=(impl, ins, backward), rounds=30 if M == 64 else 8, iterations=1,
                       warmup_rounds=2)
