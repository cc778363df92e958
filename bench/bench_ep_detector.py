"""The ``ep`` detector (on ``mimo_fast.ops.ep_lmmse``) against the same EP written with
``torch.linalg.inv`` every iteration (the usual published form), and optionally Sionna's
``EPDetector`` when ``sionna-no-rt`` is installed.

Run (all three in one process, once per thread count):
      OMP_NUM_THREADS=1 pytest bench/bench_ep_detector.py --benchmark-only \
          --benchmark-json bench/results/<machine>/ep_detector_1t.json
      python bench/report.py bench/results/<machine>/ep_detector_1t.json > bench/results/<machine>/ep_detector_1t.md
(<machine>: a folder per machine under bench/results/, e.g. xeon-2core-avx512.)
``MIMO_BENCH_B`` overrides the batch (default 4096); ``MIMO_BENCH_ROUNDS`` the rounds.
"""
from __future__ import annotations

import os

import pytest
import torch

from mimo_fast import comm, detect
from mimo_fast.detect.base import pam_moments

B = int(os.environ.get("MIMO_BENCH_B", "4096"))
ROUNDS = int(os.environ.get("MIMO_BENCH_ROUNDS", "3"))
CASES = {"8x8-qam16": (8, 8, 16, 20.0), "32x32-qpsk": (32, 32, 4, 10.0)}


def problem(case):
    nr, nt, order, snr = CASES[case]
    g = torch.Generator().manual_seed(0)
    c = comm.qam(order)
    H = comm.rayleigh(B, nr, nt, g)
    idx = c.random_indices((B, nt), g)
    nv = comm.noise_var_from_snr(snr, nr, nt)
    y = comm.awgn((H @ c.indices_to_points(idx)[..., None])[..., 0], nv, g)
    return c, H, y, nv, idx


def ep_inv(c, y, H, noise_var, iterations=10, eta=0.7, v_min=5e-7):
    """EP (E2E paper eqs. 6-10) with an explicit inverse each iteration; same maths as
    :class:`mimo_fast.detect.EP` with its defaults."""
    Nt = H.shape[-1]
    Hr, yr = comm.real_equivalent(H, y)
    s2 = noise_var / 2
    gram, rhs = Hr.mT @ Hr / s2[:, None, None], (Hr.mT @ yr[..., None])[..., 0] / s2[:, None]
    lv = torch.stack([c.real_levels, c.imag_levels]).float().repeat_interleave(Nt, 0)
    lp = torch.stack([c.real_prior, c.imag_prior]).log().float().repeat_interleave(Nt, 0)
    lam = torch.ones(H.shape[0], 2 * Nt)
    gam = torch.zeros_like(lam)
    for t in range(iterations):
        S = torch.linalg.inv(gram + torch.diag_embed(lam))
        Sigma = S.diagonal(dim1=-2, dim2=-1)
        mu = (S @ (rhs + gam)[..., None])[..., 0]
        v_obs = (Sigma / (1 - Sigma * lam)).clamp_min(v_min)
        x_obs = v_obs * (mu / Sigma - gam)
        if t == iterations - 1:
            break
        x_hat, v_hat = pam_moments(x_obs, v_obs, lv, lp)
        v_hat = v_hat.clamp_min(v_min)
        lam_new, gam_new = 1 / v_hat - 1 / v_obs, x_hat / v_hat - x_obs / v_obs
        neg = lam_new <= 0
        lam_new, gam_new = torch.where(neg, lam, lam_new), torch.where(neg, gam, gam_new)
        lam, gam = (1 - eta) * lam_new + eta * lam, (1 - eta) * gam_new + eta * gam
    pts = c.points_as(torch.complex64)
    re = torch.argmin((pts.real - x_obs[:, :Nt, None]).square() / v_obs[:, :Nt, None]
                      + (pts.imag - x_obs[:, Nt:, None]).square() / v_obs[:, Nt:, None], -1)
    return re


def _sionna():
    try:
        from sionna.phy.mimo import EPDetector  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


IMPLS = ["mimo_fast-ep", "torch-inv-ep"] + (["sionna-ep"] if _sionna() else [])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("impl", IMPLS)
def test_ep_detector(benchmark, case, impl):
    c, H, y, nv, idx = problem(case)
    nvt = torch.full((B,), nv)
    if impl == "mimo_fast-ep":
        det = detect.make("ep", c)
        fn = lambda: det(y, H, nvt).hard  # noqa: E731
    elif impl == "torch-inv-ep":
        fn = lambda: ep_inv(c, y, H, nvt)  # noqa: E731
    else:
        from sionna.phy.mimo import EPDetector
        sdet = EPDetector("symbol", c.bits_per_symbol, hard_out=True, l=10)
        fn = lambda: sdet(y, H, torch.eye(H.shape[1], dtype=H.dtype) * nv)  # noqa: E731
    with torch.no_grad():
        fn()
        hard = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    if impl != "sionna-ep":
        ser = float((hard != idx).float().mean())
        benchmark.extra_info.update(ser=ser, batch=B, vectors_per_s=B / benchmark.stats.stats.min)
        ref = ep_inv(c, y, H, nvt)
        benchmark.extra_info["agree_with_inv"] = float((hard == ref).float().mean())
    else:
        # Sionna's hard symbols are indices into its own (5G-labelled) QAM: map them to the
        # points and back to ours, so its SER counts the same errors
        from sionna.phy.mapping import Constellation
        spts = Constellation("qam", c.bits_per_symbol).points.to(torch.complex64)
        ser = float((c.nearest(spts[hard.long()]) != idx).float().mean())
        benchmark.extra_info.update(ser=ser, batch=B, vectors_per_s=B / benchmark.stats.stats.min)
