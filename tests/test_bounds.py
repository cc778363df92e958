"""mimo_fast.eval.bounds: the matched-filter bound against Monte Carlo and closed forms, its
place under the detectors' curves, the SNR-at-SER helpers and their errors."""
import math

import numpy as np
import pytest
import torch

from mimo_fast import comm, detect
from mimo_fast.eval import SimConfig, draw_batch
from mimo_fast.eval.bounds import mfb_ser, snr_at_mfb, snr_at_ser


def _q(x):
    return 0.5 * np.vectorize(math.erfc)(x / math.sqrt(2))


def _monte_carlo(snr_db, nr, nt, M, rho_rx=None, n=400_000, seed=0):
    """Average the AWGN SER of square M-QAM over drawn ||h||^2 (the bound's definition)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, nr)) ** 2 + rng.standard_normal((n, nr)) ** 2) / 2     # |CN(0,1)|^2
    lam = np.ones(nr) if rho_rx is None else np.linalg.eigvalsh(
        rho_rx ** np.abs(np.subtract.outer(np.arange(nr), np.arange(nr))))
    gamma = (w * lam).sum(1) / nr * nr * 10 ** (snr_db / 10) / nt
    a, g = 2 * (1 - 1 / math.sqrt(M)), 3 / (M - 1)
    q = _q(np.sqrt(g * gamma))
    return float(np.mean(2 * a * q - a * a * q * q))


@pytest.mark.parametrize("snr,nr,nt,mod,rho", [(8.0, 32, 32, "qam4", None), (20.0, 8, 8, "qam16", None),
                                               (10.0, 1, 1, "qam4", None), (15.0, 4, 2, "qam64", None),
                                               (12.0, 8, 8, "qam16", 0.7)])
def test_matches_monte_carlo(snr, nr, nt, mod, rho):
    got = float(mfb_ser(snr, nr, nt, mod, rho_rx=rho))
    want = _monte_carlo(snr, nr, nt, comm.from_name(mod).order, rho)
    assert got == pytest.approx(want, rel=0.03)


def test_closed_forms():
    # one receive antenna, QPSK (Simon & Alouini, Rayleigh): with c = gamma_bar / 2,
    # E Q = (1 - sqrt(c / (1 + c))) / 2, E Q^2 = (1 - 4/pi sqrt(c / (1 + c)) atan(sqrt((1 + c) / c))) / 4
    for snr in (0.0, 10.0, 30.0):
        c = 10 ** (snr / 10) / 2
        eq = (1 - math.sqrt(c / (1 + c))) / 2
        eq2 = (1 - 4 / math.pi * math.sqrt(c / (1 + c)) * math.atan(math.sqrt((1 + c) / c))) / 4
        assert float(mfb_ser(snr, 1, 1, "qam4")) == pytest.approx(2 * eq - eq2, rel=1e-9)
    # many antennas: channel hardening, the AWGN SER at the mean SNR
    g = 10 ** (12 / 10)
    q = float(_q(math.sqrt(g * 3 / 15)))
    a = 1.5
    assert float(mfb_ser(12.0, 20000, 20000, "qam16")) == pytest.approx(2 * a * q - a * a * q * q, rel=2e-3)
    # rho_rx = 0 is i.i.d. Rayleigh; correlation hurts the bound
    assert float(mfb_ser(10.0, 8, 8, "qam16", rho_rx=0.0)) == pytest.approx(float(mfb_ser(10.0, 8, 8, "qam16")))
    assert float(mfb_ser(10.0, 8, 8, "qam16", rho_rx=0.9)) > float(mfb_ser(10.0, 8, 8, "qam16"))


def test_shape_monotone_and_extremes():
    snr = np.array([[-10.0, 0.0], [20.0, 60.0]])
    s = mfb_ser(snr, 8, 8, "qam16")
    assert s.shape == (2, 2) and np.all(np.isfinite(s)) and np.all(s >= 0)
    assert s[0, 0] > s[0, 1] > s[1, 0] > s[1, 1] and s[1, 1] < 1e-20   # very high SNR: no underflow trouble
    assert float(mfb_ser(-60.0, 8, 8, "qam4")) == pytest.approx(0.75, abs=1e-3)   # guessing among 4


def test_bound_is_under_the_detectors():
    """ML on a small system (and every other detector) sits above the bound."""
    c = comm.from_name("qam4")
    cfg = SimConfig(nr=4, nt=4, mod="qam4")
    g = torch.Generator().manual_seed(3)
    snr = 10.0
    y, H, nv, idx = draw_batch(cfg, c, 4000, snr, g)
    bound = float(mfb_ser(snr, 4, 4, c))
    for name in ("ml", "ep", "lmmse"):
        ser = (detect.make(name, c)(y, H, nv).hard != idx).double().mean().item()
        assert ser > 1.5 * bound, (name, ser, bound)


def test_snr_helpers():
    assert snr_at_ser([0, 10, 20], [1e-1, 1e-2, 1e-3], 1e-2) == pytest.approx(10.0)
    assert snr_at_ser([0, 10], [1e-1, 1e-3], 1e-2) == pytest.approx(5.0)
    assert snr_at_ser([10, 0], [1e-3, 1e-1], 1e-2) == pytest.approx(5.0)           # any order
    assert math.isnan(snr_at_ser([0, 10], [1e-1, 5e-2], 1e-2))                    # not reached
    assert math.isnan(snr_at_ser([0, 10], [1e-1, 0.0], 1e-2))                     # zero-error points dropped
    s = snr_at_mfb(1e-2, 32, 32, "qam4")
    assert float(mfb_ser(s, 32, 32, "qam4")) == pytest.approx(1e-2, rel=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="square QAM"):
        mfb_ser(10.0, 4, 4, comm.Constellation(torch.tensor([1, 1j, -1, -1j, 2, 2j, -2, -2j]), name="star8"))
    with pytest.raises(ValueError, match="rho_rx"):
        mfb_ser(10.0, 4, 4, "qam4", rho_rx=(0.1, 0.5))
    with pytest.raises(ValueError, match="rho_rx"):
        mfb_ser(10.0, 4, 4, "qam4", rho_rx=1.0)
    with pytest.raises(ValueError, match="nr"):
        mfb_ser(10.0, 0, 4, "qam4")
    with pytest.raises(ValueError, match="snr_db"):
        mfb_ser(float("nan"), 4, 4, "qam4")
    with pytest.raises(ValueError, match="target"):
        snr_at_mfb(0.0, 4, 4, "qam4")
