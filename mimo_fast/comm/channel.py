"""Channels, noise and SNR -- the one place where SNR is defined (docs/conventions.md).

    SNR = E||H x||^2 / E||n||^2.

With i.i.d. entries CN(0, 1/Nr) and symbols of average energy Es, E||Hx||^2 = Nt Es, so
the complex noise variance per receive antenna is ``sigma^2 = Nt Es / (Nr SNR)``
(:func:`noise_var_from_snr`). The Kronecker model keeps unit-diagonal correlation
matrices, so E||Hx||^2 and therefore the same formula still hold. Imperfect CSI does not
change the true channel, only what the detector is told.

All randomness goes through an explicit ``torch.Generator``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

Rho = Union[None, float, Sequence[float]]


def noise_var_from_snr(snr_db, nr: int, nt: int, es: float = 1.0) -> float:
    """Complex noise variance per receive antenna for an SNR in dB (see module doc)."""
    if nr < 1 or nt < 1:
        raise ValueError(f"nr and nt must be >= 1, got nr={nr}, nt={nt}")
    if not math.isfinite(float(snr_db)):
        # -inf: a zero SNR (division by zero); +inf: zero noise, which every detector divides by
        raise ValueError(f"SNR must be a finite number of dB, got {float(snr_db)}")
    return nt * es / (nr * 10.0 ** (float(snr_db) / 10.0))


def complex_normal(shape, var, generator: torch.Generator, dtype=torch.complex64, device=None) -> Tensor:
    """CN(0, var) samples; ``var`` a float or a tensor broadcastable to ``shape``."""
    real = dtype.to_real()
    re = torch.randn(tuple(shape), generator=generator, dtype=real, device=device)
    im = torch.randn(tuple(shape), generator=generator, dtype=real, device=device)
    z = torch.complex(re, im)
    if isinstance(var, Tensor):
        return z * (var.to(real) / 2).sqrt()
    return z * math.sqrt(float(var) / 2)


def awgn(y_clean: Tensor, noise_var, generator: torch.Generator) -> Tensor:
    """``y_clean + n`` with n ~ CN(0, noise_var); ``noise_var`` float or ``(B,)``."""
    if isinstance(noise_var, Tensor) and noise_var.dim() == 1:
        noise_var = noise_var[:, None]
    return y_clean + complex_normal(y_clean.shape, noise_var, generator, y_clean.dtype, y_clean.device)


def rayleigh(batch: int, nr: int, nt: int, generator: torch.Generator,
             dtype=torch.complex64, device=None) -> Tensor:
    """I.i.d. Rayleigh ``(B, Nr, Nt)`` with entries CN(0, 1/Nr)."""
    return complex_normal((batch, nr, nt), 1.0 / nr, generator, dtype, device)


def exp_correlation(n: int, rho: Tensor) -> Tensor:
    """``(B, n, n)`` exponential correlation ``R[i, j] = rho^|i - j|`` for ``rho (B,)``."""
    d = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs().to(rho.dtype)
    return rho[:, None, None] ** d


def _draw_rho(rho: Rho, batch: int, generator, name: str) -> Optional[Tensor]:
    if rho is None:
        return None
    if isinstance(rho, (int, float)):
        lo = hi = float(rho)
    else:
        lo, hi = (float(r) for r in rho)
    if not (0.0 <= lo <= hi < 1.0):
        raise ValueError(f"{name} must be in [0, 1) (a value or a (low, high) range), got {rho!r}")
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return lo + (hi - lo) * u


def kronecker(batch: int, nr: int, nt: int, generator: torch.Generator, rho_rx: Rho = None,
              rho_tx: Rho = None, dtype=torch.complex64, device=None) -> Tensor:
    """Kronecker channel ``R_rx^{1/2} H_w R_tx^{T/2}`` with exponential correlation.

    ``rho_rx``/``rho_tx``: None (uncorrelated on that side), a float in [0, 1), or a
    ``(low, high)`` range from which each batch element draws its own rho uniformly.
    ``H_w`` is i.i.d. CN(0, 1/Nr); the correlation matrices have unit diagonal, so the
    SNR definition is unchanged. Square roots are Cholesky factors.
    """
    r_rx = _draw_rho(rho_rx, batch, generator, "rho_rx")
    r_tx = _draw_rho(rho_tx, batch, generator, "rho_tx")
    H = rayleigh(batch, nr, nt, generator, torch.complex128)
    if r_rx is not None:
        H = torch.linalg.cholesky(exp_correlation(nr, r_rx)).to(H.dtype) @ H
    if r_tx is not None:
        H = H @ torch.linalg.cholesky(exp_correlation(nt, r_tx)).mT.to(H.dtype)
    return H.to(dtype=dtype, device=device)


def draw_channel(kind: str, batch: int, nr: int, nt: int, generator: torch.Generator, *,
                 rho_rx: Rho = None, rho_tx: Rho = None, dtype=torch.complex64, device=None) -> Tensor:
    """Dispatch on ``kind`` in ``("rayleigh", "kronecker")``."""
    if kind == "rayleigh":
        return rayleigh(batch, nr, nt, generator, dtype, device)
    if kind == "kronecker":
        return kronecker(batch, nr, nt, generator, rho_rx, rho_tx, dtype, device)
    raise ValueError(f"channel kind must be 'rayleigh' or 'kronecker', got {kind!r}")


def channel(*args, **kwargs) -> Tensor:
    """Deprecated name of :func:`draw_channel` (as ``mimo_fast.comm.channel`` it hid this
    module; the package now exports ``draw_channel`` and ``comm.channel`` is the module)."""
    import warnings
    warnings.warn("mimo_fast.comm.channel.channel is deprecated; use mimo_fast.comm.draw_channel",
                  DeprecationWarning, stacklevel=2)
    return draw_channel(*args, **kwargs)


def imperfect_csi(H: Tensor, error_var: float, generator: torch.Generator) -> Tensor:
    """The channel estimate a detector is given: ``H + E``, E i.i.d. CN(0, error_var / Nr).

    ``error_var`` is relative to the per-entry channel variance 1/Nr (0.01 = estimation
    error 20 dB below the channel); 0 returns ``H`` itself.
    """
    if error_var < 0:
        raise ValueError(f"error_var must be >= 0, got {error_var}")
    if error_var == 0:
        return H
    return H + complex_normal(H.shape, error_var / H.shape[-2], generator, H.dtype, H.device)


def real_equivalent(H: Tensor, y: Optional[Tensor] = None):
    """The real-equivalent model (docs/conventions.md): ``H_r = [[Re H, -Im H], [Im H, Re H]]``,
    ``y_r = [Re y; Im y]`` (and ``x_r = [Re x; Im x]``); real noise variance is half the
    complex one. Returns ``H_r`` or ``(H_r, y_r)``."""
    Hr = torch.cat([torch.cat([H.real, -H.imag], -1), torch.cat([H.imag, H.real], -1)], -2)
    if y is None:
        return Hr
    return Hr, complex_to_real(y)


def complex_to_real(x: Tensor) -> Tensor:
    """``(..., N)`` complex -> ``(..., 2N)`` real ``[Re x; Im x]``."""
    return torch.cat([x.real, x.imag], -1)


def real_to_complex(x: Tensor) -> Tensor:
    n = x.shape[-1] // 2
    return torch.complex(x[..., :n], x[..., n:])
