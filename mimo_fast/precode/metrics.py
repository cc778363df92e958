"""Spectral efficiency, energy efficiency and the power model of the Model-GNN paper
(Guo & Yang, "A Model-based GNN for Learning Precoding"), and its channel draws.

System (paper Sec. II-A): a base station with N antennas serves K single-antenna users.
``H = [h_1, ..., h_K]`` is ``(B, N, K)`` complex (columns are users, as in docs/conventions.md), the
precoder ``V = [v_1, ..., v_K]`` is ``(B, N, K)``. User k receives
``y_k = h_k^H sum_j v_j s_j + n_k`` with noise power ``sigma0^2``; the SNR is
``P_max / sigma0^2`` (P_max = 1 by default), so ``sigma0^2 = P_max / SNR``.

Rate of user k (eq. 1a)::

    R_k = log2(1 + |h_k^H v_k|^2 / (sum_{j != k} |h_k^H v_j|^2 + sigma0^2))

Energy efficiency (Sec. IV-B-2)::

    EE = sum_k R_k / (rho Tr(V^H V) + N P_c + P_0),   P_c = 17.6 W, P_0 = 43.3 W, 1/rho = 0.311

(``Tr(V^H V)`` in watts). The constraint-satisfaction ratio is the fraction of users with
``R_k >= R_min`` over all test samples.
"""
from __future__ import annotations

from typing import Optional

import torch

PC_W = 17.6            # circuit power per antenna (W), paper ref. [37]
P0_W = 43.3            # constant power per base station (W)
PA_EFFICIENCY = 0.311  # 1/rho, power-amplifier efficiency


def noise_var(snr_db: float, p_max: float = 1.0) -> float:
    """``sigma0^2 = P_max / SNR`` (SNR in dB)."""
    return float(p_max) / 10.0 ** (float(snr_db) / 10.0)


def draw_channels(batch: int, n: int, k: int, *, generator: torch.Generator,
                  dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """``(batch, n, k)`` i.i.d. Rayleigh channels, entries CN(0, 1) (paper Sec. IV-A)."""
    for name, v in (("batch", batch), ("n", n), ("k", k)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    z = torch.randn(batch, n, k, 2, generator=generator, dtype=real) * 0.5 ** 0.5
    return torch.view_as_complex(z).to(dtype)


def check_pair(H: torch.Tensor, V: torch.Tensor) -> None:
    if not H.is_complex() or H.dim() != 3:
        raise ValueError(f"H must be complex (B, N, K), got {H.dtype} {tuple(H.shape)}")
    if V.shape != H.shape:
        raise ValueError(f"V must have H's shape {tuple(H.shape)}, got {tuple(V.shape)}")


def rates(H: torch.Tensor, V: torch.Tensor, noise_var: float) -> torch.Tensor:
    """``(B, K)`` per-user rates ``R_k`` in bit/s/Hz (eq. 1a)."""
    check_pair(H, V)
    if not noise_var > 0:
        raise ValueError(f"noise_var must be > 0, got {noise_var!r}")
    G = (H.mH @ V).abs().square()                  # G[b, k, j] = |h_k^H v_j|^2
    signal = torch.diagonal(G, dim1=-2, dim2=-1)
    interference = G.sum(-1) - signal
    return torch.log2(1 + signal / (interference + noise_var))


def sum_se(H: torch.Tensor, V: torch.Tensor, noise_var: float) -> torch.Tensor:
    """``(B,)`` sum spectral efficiency, the objective of P1."""
    return rates(H, V, noise_var).sum(-1)


def transmit_power(V: torch.Tensor) -> torch.Tensor:
    """``(B,)`` ``Tr(V^H V)``."""
    return V.abs().square().sum((-2, -1))


def power_normalize(V: torch.Tensor, p_max: float = 1.0) -> torch.Tensor:
    """``sqrt(P_max) V / ||V||_F`` per sample: meets (1b) with equality (paper Sec. III-C)."""
    return V * (float(p_max) ** 0.5 / V.abs().square().sum((-2, -1), keepdim=True).clamp_min(1e-30).sqrt())


def power_consumption(V: torch.Tensor, n: Optional[int] = None) -> torch.Tensor:
    """``(B,)`` ``rho Tr(V^H V) + N P_c + P_0`` in watts (V in sqrt-watts)."""
    n = V.shape[-2] if n is None else n
    return transmit_power(V) / PA_EFFICIENCY + n * PC_W + P0_W


def ee(H: torch.Tensor, V: torch.Tensor, noise_var: float) -> torch.Tensor:
    """``(B,)`` energy efficiency in bit/s/Hz/W (Sec. IV-B-2)."""
    return sum_se(H, V, noise_var) / power_consumption(V)


def constraint_satisfaction(R: torch.Tensor, r_min: float) -> float:
    """Fraction of users (over all samples) with ``R_k >= R_min`` (Sec. IV-B-2)."""
    return float((R >= r_min).double().mean())


def se_ratio(se: torch.Tensor, se_ref: torch.Tensor) -> float:
    """Mean over samples of ``se / se_ref`` (the paper's SE ratio against WMMSE)."""
    return float((se.double() / se_ref.double()).mean())


__all__ = ["PC_W", "P0_W", "PA_EFFICIENCY", "noise_var", "draw_channels", "rates", "sum_se",
           "transmit_power", "power_normalize", "power_consumption", "ee", "constraint_satisfaction",
           "se_ratio", "check_pair"]
