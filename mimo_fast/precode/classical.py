"""Closed-form precoders of eq. (2)'s structures with equal power per user (paper Sec. II-A).

* MRT:  ``V = H``
* ZF:   ``V = H (H^H H)^{-1}``                                (needs K <= N)
* RZF:  ``V = H (H^H H + (K sigma0^2 / P_max) I_K)^{-1}``

"followed by power allocation": every column is scaled to ``||v_k||^2 = P_max / K``, so
``Tr(V^H V) = P_max`` exactly (the paper's "ZFBF with equal power allocation").
"""
from __future__ import annotations

import torch


def _check(H: torch.Tensor) -> None:
    if not isinstance(H, torch.Tensor) or not H.is_complex() or H.dim() != 3:
        raise ValueError(f"H must be a complex (B, N, K) tensor, got "
                         f"{getattr(H, 'dtype', type(H))} {tuple(getattr(H, 'shape', ()))}")


def equal_power(V: torch.Tensor, p_max: float = 1.0) -> torch.Tensor:
    """Scale each column to ``||v_k||^2 = P_max / K``."""
    k = V.shape[-1]
    norms = V.abs().square().sum(-2, keepdim=True).clamp_min(1e-30).sqrt()
    return V / norms * (float(p_max) / k) ** 0.5


def mrt(H: torch.Tensor, p_max: float = 1.0) -> torch.Tensor:
    _check(H)
    return equal_power(H, p_max)


def zf(H: torch.Tensor, p_max: float = 1.0) -> torch.Tensor:
    _check(H)
    n, k = H.shape[-2:]
    if k > n:
        raise ValueError(f"zf needs K <= N (got N={n}, K={k}): H^H H is singular")
    gram = H.mH @ H
    return equal_power(H @ torch.linalg.solve(gram, torch.eye(k, dtype=H.dtype, device=H.device)), p_max)


def rzf(H: torch.Tensor, noise_var: float, p_max: float = 1.0) -> torch.Tensor:
    _check(H)
    if not noise_var > 0:
        raise ValueError(f"noise_var must be > 0, got {noise_var!r}")
    k = H.shape[-1]
    eye = torch.eye(k, dtype=H.dtype, device=H.device)
    A = H.mH @ H + (k * noise_var / p_max) * eye
    return equal_power(H @ torch.linalg.solve(A, eye), p_max)


__all__ = ["mrt", "zf", "rzf", "equal_power"]
