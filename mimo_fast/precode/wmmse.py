"""WMMSE (Shi, Razaviyayn, Luo, He, IEEE TSP 2011) for the sum-SE problem P1, batched:
the paper's numerical optimum ("SE ratio against WMMSE").

With ``T_k = sum_j |h_k^H v_j|^2 + sigma0^2`` one iteration is::

    u_k = h_k^H v_k / T_k                            (MMSE receiver)
    w_k = 1 / (1 - |h_k^H v_k|^2 / T_k)              (inverse MSE)
    v_k = (sum_j w_j |u_j|^2 h_j h_j^H + mu I)^{-1} h_k u_k w_k

with ``mu >= 0`` the smallest value for which ``Tr(V^H V) <= P_max``, found by bisection on
the eigen-decomposition of the (N x N) matrix: ``Tr(V^H V) = sum_i |phi_i|^2 / (lam_i + mu)^2``.
Each iteration is a block-coordinate step on the weighted MSE, so the sum SE never decreases.

Convergence rule: a sample stops (its V is frozen) once one iteration raises its sum SE by
less than ``tol * max(SE, 1)`` (default ``tol = 1e-6``); the loop ends when all samples have
stopped or after ``max_iter`` iterations (default 500). Initial point: RZF with equal power.
Runs in complex128 and returns the input dtype. Results do not depend on the batch size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from mimo_fast.precode import classical, metrics

BISECTION_STEPS = 80


@dataclass
class WMMSEInfo:
    iterations: int              # iterations run (the longest sample)
    converged: torch.Tensor      # (B,) bool: stopped by the rule, not by the cap
    history: Optional[list]      # per-iteration (B,) sum SE, when asked for


def _v_step(H: torch.Tensor, a: torch.Tensor, Bm: torch.Tensor, p_max: float) -> torch.Tensor:
    """``(A + mu I)^{-1} Bm`` with ``A = sum_u a_u h_u h_u^H`` over the columns of ``H`` and the
    smallest ``mu >= 0`` that meets ``Tr(V^H V) <= p_max`` (bisection; also used per base
    station by the multi-cell WMMSE)."""
    A = (H * a.unsqueeze(-2)) @ H.mH                               # (B, N, N) Hermitian PSD
    lam, U = torch.linalg.eigh(A)
    lam = lam.clamp_min(0)
    phi2 = (U.mH @ Bm).abs().square().sum(-1)                      # (B, N) |phi_i|^2
    power = lambda mu: (phi2 / (lam + mu.unsqueeze(-1)).square()).sum(-1)
    lo = torch.zeros_like(lam[..., 0])
    hi = (phi2.sum(-1) / p_max).sqrt() + 1e-12                     # power(hi) <= P_max
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        over = power(mid) > p_max
        lo = torch.where(over, mid, lo)
        hi = torch.where(over, hi, mid)
    mu = hi                                                        # feasible end of the bracket
    return U @ ((U.mH @ Bm) / (lam + mu.unsqueeze(-1)).unsqueeze(-1))


def wmmse(H: torch.Tensor, noise_var: float, p_max: float = 1.0, *, tol: float = 1e-6,
          max_iter: int = 500, V0: Optional[torch.Tensor] = None,
          record_history: bool = False) -> tuple[torch.Tensor, WMMSEInfo]:
    """WMMSE precoder ``(B, N, K)`` for P1 and a :class:`WMMSEInfo` (see the module docstring)."""
    if not isinstance(H, torch.Tensor) or not H.is_complex() or H.dim() != 3:
        raise ValueError(f"H must be a complex (B, N, K) tensor, got {getattr(H, 'shape', H)!r}")
    if not noise_var > 0:
        raise ValueError(f"noise_var must be > 0, got {noise_var!r}")
    if not p_max > 0:
        raise ValueError(f"p_max must be > 0, got {p_max!r}")
    if not tol >= 0 or not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"tol must be >= 0 and max_iter a positive integer, got {tol!r}, {max_iter!r}")
    dtype = H.dtype
    H = H.to(torch.complex128)
    V = classical.rzf(H, noise_var, p_max) if V0 is None else V0.to(torch.complex128)
    se = metrics.sum_se(H, V, noise_var)
    active = torch.ones_like(se, dtype=torch.bool)
    history = [se.clone()] if record_history else None
    it = 0
    while it < max_iter and bool(active.any()):
        it += 1
        G = H.mH @ V                                               # G[k, j] = h_k^H v_j
        signal = torch.diagonal(G, dim1=-2, dim2=-1)
        T = G.abs().square().sum(-1) + noise_var
        u = signal / T
        w = 1.0 / (1.0 - signal.abs().square() / T).clamp_min(1e-300)
        V_new = _v_step(H, w * u.abs().square(), H * (u * w).unsqueeze(-2), p_max)
        se_new = metrics.sum_se(H, V_new, noise_var)
        V = torch.where(active[:, None, None], V_new, V)
        gain = se_new - se
        se = torch.where(active, se_new, se)
        active = active & (gain >= tol * se.clamp_min(1.0))
        if record_history:
            history.append(se.clone())
    return V.to(dtype), WMMSEInfo(iterations=it, converged=~active, history=history)


__all__ = ["wmmse", "WMMSEInfo", "BISECTION_STEPS"]
