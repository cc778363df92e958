"""ep_lmmse on the CPU, float32: the plain torch.linalg path (cholesky + cholesky_solve +
cholesky_inverse diagonal; autograd for backward), backend 'reference' and backend 'cpu',
forward and forward+backward. Answers are checked against the reference before timing.
test_ep_lmmse_paired times torch.linalg and 'cpu' alternately in one loop, so the forward
speed-up at K16 and K64 comes from the same seconds of a shared machine.

    pytest bench/bench_ep_lmmse.py --benchmark-only --benchmark-json bench/results/<machine>/ep_lmmse_cpu.json
    python bench/report.py bench/results/<machine>/ep_lmmse_cpu.json > bench/results/<machine>/ep_lmmse_cpu.md

(<machine>: a folder per machine under bench/results/, e.g. xeon-2core-avx512.)
"""
import statistics
import time

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


# The shapes of the forward targets (at least 20x torch.linalg at K16 and K64).
PAIRED = [shapes.EP["B4096-K16"], shapes.EP["B1024-K64"]]
CPU_CALLS = 4  # recorded cpu calls per round


@pytest.mark.parametrize("B,K", PAIRED, ids=[f"B{b}-K{k}" for b, k in PAIRED])
def test_ep_lmmse_paired(benchmark, B, K):
    """Forward, torch.linalg and backend 'cpu' in alternating blocks, so both sides are timed
    in the same seconds of a shared machine: the separate cells above time each side in its
    own seconds, and the host's other jobs moved their K16 ratio between 13x and 20x from one
    run of the file to the next (bench/results/epyc-2core-avx512/ep_lmmse_cpu_1t.md, session
    14). A round is one untimed cpu call, CPU_CALLS timed ones, one untimed torch call and a
    timed one: the first call after a switch is not recorded on either side, since it finds
    the caches and the allocator as the other side left them (at K16 the first cpu call after
    a torch call took about twice as long as the next ones). Recorded in extra_info: each
    side's median call, the ratio of the two medians, and the quartiles of the per-round
    ratio (the torch call / the median of the round's cpu calls). The benchmark's own stats
    time whole rounds."""
    ins = inputs(B, K)
    got, want = call("cpu", ins), call("torch", ins)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3 * float(b.abs().max()))
    t_torch, t_cpu, ratios = [], [], []

    def timed(impl):
        t0 = time.perf_counter()
        call(impl, ins)
        return time.perf_counter() - t0

    def one_round():
        call("cpu", ins)
        c = [timed("cpu") for _ in range(CPU_CALLS)]
        call("torch", ins)
        t = timed("torch")
        t_torch.append(t)
        t_cpu.extend(c)
        ratios.append(t / statistics.median(c))

    benchmark.group = f"ep_lmmse B{B} K{K} fwd paired"
    benchmark.pedantic(one_round, rounds=40 if K <= 16 else 20, iterations=1)
    q1, q2, q3 = statistics.quantiles(ratios, n=4)
    benchmark.extra_info.update(
        op="ep_lmmse", shape=f"B{B} K{K}", impl="paired", mode="fwd", threads=torch.get_num_threads(),
        torch_ms=statistics.median(t_torch) * 1e3, cpu_ms=statistics.median(t_cpu) * 1e3,
        ratio_of_medians=statistics.median(t_torch) / statistics.median(t_cpu),
        round_ratio_quartiles=[q1, q2, q3], rounds=len(ratios))
