"""Performance bounds for the SER curves: the matched-filter bound (MFB), and where a
measured curve crosses a target SER.

The MFB is the SER of one user alone on the channel (every other user's interference
removed by a genie), detected with its matched filter. No detector, ML included, does
better on average, so it is the floor under every curve of a simulation -- and the test of
whether a claimed gain is possible at all (an "x dB better than AMP" target that lands
left of the MFB cannot be met by any detector).

With the model of docs/conventions.md (``H`` entries CN(0, 1/Nr), SNR = E||Hx||^2 / E||n||^2, so the
complex noise variance is ``sigma^2 = Nt Es / (Nr SNR)``), user k's symbol SNR is

    gamma_k = ||h_k||^2 Es / sigma^2,      ||h_k||^2 = sum_i lambda_i |w_i|^2 / Nr,  w_i ~ CN(0, 1),

with ``lambda`` the eigenvalues of the receive correlation (all 1 for i.i.d. Rayleigh,
where ||h_k||^2 ~ Gamma(Nr, 1/Nr)). A square M-QAM symbol in AWGN is wrong with probability

    P(gamma) = 2 a Q(sqrt(g gamma)) - a^2 Q(sqrt(g gamma))^2,   a = 2 (1 - 1/sqrt(M)),  g = 3 / (M - 1)

and Craig's forms ``Q(x) = 1/pi int_0^{pi/2} exp(-x^2 / (2 sin^2 t)) dt`` (and ``Q(x)^2`` the
same over ``[0, pi/4]``) turn the average over the channel into one-dimensional integrals of
its moment-generating function ``E exp(-s ||h||^2) = prod_i (1 + s lambda_i / Nr)^-1``:

    MFB = 2a/pi int_0^{pi/2} phi(t) dt - a^2/pi int_0^{pi/4} phi(t) dt,
    phi(t) = prod_i (1 + g Es lambda_i / (2 sigma^2 Nr sin^2 t))^-1,

evaluated with Gauss-Legendre quadrature (smooth integrands; exact to ~1e-12 relative).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

from mimo_fast.comm.channel import exp_correlation, noise_var_from_snr
from mimo_fast.comm.constellation import as_constellation

_NODES = 256


def _gauss(upper: float):
    x, w = np.polynomial.legendre.leggauss(_NODES)
    return upper / 2 * (x + 1), upper / 2 * w


def _square_qam_order(c) -> int:
    """M of a square QAM (equal, evenly spaced real and imaginary levels, M = L^2); else an error."""
    M = c.order
    levels = c.real_levels.double() if c.separable else None
    gaps = levels.diff() if levels is not None else None
    if (levels is None or levels.numel() ** 2 != M or M < 4 or not torch.equal(c.real_levels, c.imag_levels)
            or not torch.allclose(gaps, gaps[0].expand_as(gaps), rtol=1e-6, atol=0)):
        raise ValueError(f"mfb_ser: constellation {c.name!r} is not a square QAM; the bound's closed form "
                         "needs one (qam4, qam16, qam64, qam256)")
    return M


def mfb_ser(snr_db, nr: int, nt: int, constellation, rho_rx: Optional[float] = None) -> np.ndarray:
    """Matched-filter-bound SER of a square QAM at ``snr_db`` (scalar or sequence; the
    SNR of docs/conventions.md) for an ``nr x nt`` i.i.d. Rayleigh channel, or a Kronecker channel with
    fixed receive correlation ``rho_rx`` (the transmit correlation does not change a single
    user's column). Returns an array shaped like ``snr_db``. See the module docstring."""
    for name, v in (("nr", nr), ("nt", nt)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"mfb_ser: {name} must be a positive int, got {v!r}")
    c = as_constellation(constellation)
    M = _square_qam_order(c)
    snr = np.asarray(snr_db, dtype=np.float64)
    if not np.all(np.isfinite(snr)):
        raise ValueError("mfb_ser: snr_db must be finite")
    if rho_rx is None:
        lam = np.ones(nr)
    else:
        if isinstance(rho_rx, (tuple, list)) or not (0 <= float(rho_rx) < 1):
            raise ValueError(f"mfb_ser: rho_rx must be one number in [0, 1) (a range has no single bound), "
                             f"got {rho_rx!r}")
        R = exp_correlation(nr, torch.tensor([float(rho_rx)], dtype=torch.float64))[0]
        lam = np.clip(np.linalg.eigvalsh(R.numpy()), 0.0, None)
    es = float(c.energy)
    a, g = 2 * (1 - 1 / math.sqrt(M)), 3 / (M - 1)
    s2 = np.vectorize(lambda s: noise_var_from_snr(float(s), nr, nt, es), otypes=[np.float64])(snr)
    coef = (g * es / (2 * s2 * nr)).reshape(-1, 1, 1)         # (S, 1, 1)

    def integral(upper: float):
        t, w = _gauss(upper)
        st2 = np.sin(t)[None, :, None] ** 2                      # (1, nodes, 1)
        # log prod_i (1 + coef lam_i / sin^2 t)^-1 as a sum of logs: no overflow for large nr
        log_phi = -np.log1p(coef * lam[None, None, :] / st2).sum(-1)   # (S, nodes)
        return (np.exp(log_phi) * w).sum(-1)

    ser = 2 * a / math.pi * integral(math.pi / 2) - a * a / math.pi * integral(math.pi / 4)
    return ser.reshape(snr.shape)


def snr_at_ser(snr_db: Sequence[float], ser: Sequence[float], target: float) -> float:
    """The SNR (dB) where a measured curve reaches ``target``, interpolating log10(SER)
    linearly between the two points that bracket it (curves must fall with SNR). NaN when
    the points do not bracket the target."""
    pts = sorted((float(s), float(p)) for s, p in zip(snr_db, ser) if p > 0)
    for (s0, p0), (s1, p1) in zip(pts, pts[1:]):
        if p0 >= target >= p1 and p0 > p1:
            f = (math.log10(p0) - math.log10(target)) / (math.log10(p0) - math.log10(p1))
            return s0 + f * (s1 - s0)
    return float("nan")


def snr_at_mfb(target: float, nr: int, nt: int, constellation, rho_rx: Optional[float] = None,
               lo: float = -20.0, hi: float = 60.0) -> float:
    """The SNR (dB) where the matched-filter bound equals ``target`` (bisection; the bound
    falls monotonically with SNR)."""
    if not 0 < target < 1:
        raise ValueError(f"snr_at_mfb: target must be in (0, 1), got {target!r}")
    f = lambda s: float(mfb_ser(s, nr, nt, constellation, rho_rx)) - target   # noqa: E731
    if f(lo) < 0 or f(hi) > 0:
        raise ValueError(f"snr_at_mfb: the bound does not reach SER {target:g} between {lo} and {hi} dB")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


__all__ = ["mfb_ser", "snr_at_ser", "snr_at_mfb"]
