"""GEPNet and AMP-GNN: one inference forward and one training step (loss, backward, Adam),
on the default backend (the fused kernels behind the ops) against ``backend="reference"``
(pure PyTorch ops), with the same untrained weights.

Run:  pytest bench/bench_learned.py --benchmark-only --benchmark-json bench/results/<machine>/learned_cpu.json
      python bench/report.py bench/results/<machine>/learned_cpu.json > bench/results/<machine>/learned_cpu.md
(<machine>: a folder per machine under bench/results/, e.g. xeon-2core-avx512.)
``MIMO_BENCH_B`` sets the inference batch (default 2048), ``MIMO_BENCH_TRAIN_B`` the
training batch (256), ``MIMO_BENCH_ROUNDS`` the rounds (3), ``MIMO_BENCH_DEVICE`` the
device (cuda when there is one).
"""
from __future__ import annotations

import os

import pytest
import torch

from mimo_fast import comm, detect

B = int(os.environ.get("MIMO_BENCH_B", "2048"))
TRAIN_B = int(os.environ.get("MIMO_BENCH_TRAIN_B", "256"))
ROUNDS = int(os.environ.get("MIMO_BENCH_ROUNDS", "3"))
DEVICE = torch.device(os.environ.get("MIMO_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
#: model -> (nr, nt, order, snr_db): GEPNet at its paper's 8x8 16-QAM, AMP-GNN at 32x32 QPSK
CASES = {"gepnet": (8, 8, 16, 20.0), "ampgnn": (32, 32, 4, 10.0)}
BACKENDS = {"default": None, "reference": "reference"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def problem(model, batch):
    nr, nt, order, snr = CASES[model]
    g = torch.Generator().manual_seed(0)
    c = comm.qam(order)
    H = comm.rayleigh(batch, nr, nt, g)
    idx = c.random_indices((batch, nt), g)
    nv = comm.noise_var_from_snr(snr, nr, nt)
    y = comm.awgn((H @ c.indices_to_points(idx)[..., None])[..., 0], nv, g)
    return c, H.to(DEVICE), y.to(DEVICE), torch.full((batch,), nv, device=DEVICE), idx.to(DEVICE)


def build(model, c, backend):
    torch.manual_seed(0)
    return detect.make(model, c, pretrained=False, backend=backend).to(DEVICE)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("model", list(CASES))
def test_inference(benchmark, model, backend):
    c, H, y, nv, idx = problem(model, B)
    det = build(model, c, BACKENDS[backend])

    def fn():
        out = det(y, H, nv)
        sync(DEVICE)
        return out.logits

    with torch.no_grad():
        fn()
        logits = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=0)
        ref = build(model, c, "reference")(y, H, nv).logits
    benchmark.extra_info.update(batch=B, device=str(DEVICE), vectors_per_s=B / benchmark.stats.stats.min,
                                max_abs_diff_vs_reference=float((logits - ref).abs().max()))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("model", list(CASES))
def test_training_step(benchmark, model, backend):
    c, H, y, nv, idx = problem(model, TRAIN_B)
    det = build(model, c, BACKENDS[backend])
    opt = torch.optim.Adam(det.parameters(), lr=1e-3)

    def fn():
        opt.zero_grad()
        loss = det.training_loss(y, H, nv, idx)
        loss.backward()
        opt.step()
        sync(DEVICE)
        return loss

    fn()
    loss = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(batch=TRAIN_B, device=str(DEVICE), loss=float(loss),
                                steps_per_s=1 / benchmark.stats.stats.min)
