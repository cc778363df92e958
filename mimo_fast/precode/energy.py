"""The energy-efficiency problem of the Model-GNN paper (Sec. IV-B-2) and its numerical
baseline, ZF-Dinkelbach.

Problem (P3, ours by number; the paper's Sec. IV-B-2)::

    max_V  EE(V) = sum_k R_k(H, V) / (rho Tr(V^H V) + N P_c + P_0)
    s.t.   R_k(H, V) >= R_min,  k = 1..K

with R_k of eq. (1a), P_c = 17.6 W, P_0 = 43.3 W, 1/rho = 0.311 and sigma0^2 = P_max / SNR
(P_max = 1 W). The paper states no transmit-power cap for this problem, and R_min = 9 bit/s/Hz
per user at 10 dB SNR (Table IV) is out of reach with Tr(V^H V) <= P_max, so there is none here:
the EE-optimal transmit power is well above P_max (docs/precoding.md, "EE").

Baseline ("EE-numerical" in our tables; the paper uses the algorithm of its ref. [2], Li, Tian
& Yang 2015, which we did not implement): **ZF-Dinkelbach**. Directions are the normalised ZF
columns ``u_k = w_k / ||w_k||`` of ``W = H (H^H H)^{-1}`` (needs K <= N), so the users do not
interfere and ``R_k = log2(1 + a_k p_k)`` with ``a_k = |h_k^H u_k|^2 / sigma0^2 = 1 / (||w_k||^2
sigma0^2)``. The power allocation maximises the ratio by Dinkelbach's method (W. Dinkelbach,
"On nonlinear fractional programming", Management Science 1967; A. Zappone & E. Jorswieck,
"Energy efficiency in wireless networks via fractional programming theory", FnT 2015, Alg. 3.1):
with ``c = rho`` and ``P_circ = N P_c + P_0``, iteration t solves the concave problem

    p^(t) = argmax_{p_k >= p_min,k} sum_k log2(1 + a_k p_k) - q_t (c sum_k p_k + P_circ)

in closed form (water-filling with floors),
``p_k = max(p_min,k, 1 / (q_t c ln 2) - 1 / a_k)``, ``p_min,k = (2^R_min - 1) / a_k``,
and sets ``q_{t+1} = EE(p^(t))``. Start: ``p_k = max(p_min,k, 1 W / K)`` (feasible and with
``q_0 > 0`` also for R_min = 0, so ``q_0`` is an EE). Since
``F(q_t) = max_p [num - q_t den] >= 0`` (p^(t-1) attains 0), ``q_{t+1} >= q_t``: the EE never
decreases, and it converges to the optimal EE over ZF directions (superlinearly).
Convergence rule: a sample stops once ``q_{t+1} - q_t <= tol * q_t`` (default 1e-9); cap 100
iterations (the paper's iteration count for its EE-numerical). Every constraint holds with
equality or better, so its constraint-satisfaction ratio is 1 (the floors carry a 1e-4 relative
power margin so that this survives evaluation in complex64; it costs < 2e-4 bit/s/Hz).

The learned EE precoder is trained on the Lagrangian of P3 (:func:`lagrangian`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from mimo_fast.precode import metrics

MARGIN = 1e-4   # relative margin on the rate floors: R_k >= R_min survives complex64 rounding


@dataclass
class DinkelbachInfo:
    iterations: int              # iterations run (the longest sample)
    converged: torch.Tensor      # (B,) bool: stopped by the rule, not by the cap
    history: Optional[list]      # per-iteration (B,) EE (the q_t), when asked for


def _check_r_min(r_min) -> float:
    if not isinstance(r_min, (int, float)) or isinstance(r_min, bool) or not r_min >= 0:
        raise ValueError(f"r_min must be a number >= 0 (bit/s/Hz), got {r_min!r}")
    return float(r_min)


def zf_dinkelbach(H: torch.Tensor, noise_var: float, r_min: float, *, tol: float = 1e-9,
                  max_iter: int = 100, record_history: bool = False) -> tuple[torch.Tensor, DinkelbachInfo]:
    """EE-maximal ZF precoder ``(B, N, K)`` under ``R_k >= r_min`` (module docstring)."""
    if not isinstance(H, torch.Tensor) or not H.is_complex() or H.dim() != 3:
        raise ValueError(f"H must be a complex (B, N, K) tensor, got {getattr(H, 'shape', H)!r}")
    n, k = H.shape[-2:]
    if k > n:
        raise ValueError(f"zf_dinkelbach needs K <= N (got N={n}, K={k})")
    if not noise_var > 0:
        raise ValueError(f"noise_var must be > 0, got {noise_var!r}")
    r_min = _check_r_min(r_min)
    if not tol >= 0 or not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"tol must be >= 0 and max_iter a positive integer, got {tol!r}, {max_iter!r}")
    dtype = H.dtype
    H = H.to(torch.complex128)
    W = H @ torch.linalg.inv(H.mH @ H)                              # h_k^H w_k = 1
    wn2 = W.abs().square().sum(-2)                                  # (B, K) ||w_k||^2
    U = W / wn2.sqrt().unsqueeze(-2)
    a = 1.0 / (wn2 * noise_var)                                     # SNR per watt of user k
    p_min = (2.0 ** r_min - 1.0) / a * (1 + MARGIN)
    c, p_circ = 1.0 / metrics.PA_EFFICIENCY, n * metrics.PC_W + metrics.P0_W

    def ee_of(p):
        return torch.log2(1 + a * p).sum(-1) / (c * p.sum(-1) + p_circ)

    p = p_min.clamp_min(1.0 / k)
    q = ee_of(p)
    active = torch.ones_like(q, dtype=torch.bool)
    history = [q.clone()] if record_history else None
    it = 0
    while it < max_iter and bool(active.any()):
        it += 1
        p_new = torch.maximum(p_min, 1.0 / (q.unsqueeze(-1) * c * math.log(2)) - 1.0 / a)
        q_new = ee_of(p_new)
        p = torch.where(active.unsqueeze(-1), p_new, p)
        gain = q_new - q
        q = torch.where(active, q_new, q)
        active = active & (gain > tol * q)
        if record_history:
            history.append(q.clone())
    V = U * p.sqrt().unsqueeze(-2)
    return V.to(dtype), DinkelbachInfo(iterations=it, converged=~active, history=history)


def circuit_power(n: int) -> float:
    """``N P_c + P_0`` in watts."""
    return n * metrics.PC_W + metrics.P0_W


def lagrangian(H: torch.Tensor, V: torch.Tensor, noise_var: float, r_min: float,
               lam: torch.Tensor) -> torch.Tensor:
    """``(B,)`` Lagrangian of P3 per sample (the paper's "Lagrangian multiplier method", its ref.
    [38], Sun & Yang 2019)::

        L_i = EE_i (N P_c + P_0) - sum_k lam_ik (R_min - R_ik)

    ``lam`` ``(B, K)`` >= 0 are the multipliers of the QoS constraints. EE is scaled by the
    constant ``N P_c + P_0`` (ours: same maximiser; makes dL/dR_k <= 1, so the multipliers are
    O(1) for any N). Training maximises L over the precoder and the dual step raises ``lam``
    where a constraint is violated (:func:`dual_step`)."""
    R = metrics.rates(H, V, noise_var)
    if lam.shape != R.shape:
        raise ValueError(f"lam must have shape {tuple(R.shape)}, got {tuple(lam.shape)}")
    ee = R.sum(-1) / metrics.power_consumption(V)
    return ee * circuit_power(H.shape[-2]) - (lam * (r_min - R)).sum(-1)


def dual_step(lam: torch.Tensor, R: torch.Tensor, r_min: float, step: float) -> torch.Tensor:
    """Projected dual ascent ``lam <- max(0, lam + step (R_min - R))`` (ref. [38]'s primal-dual update)."""
    return (lam + step * (r_min - R.detach().to(lam.dtype))).clamp_min(0)


def ee_ratio(ee: torch.Tensor, ee_ref: torch.Tensor) -> float:
    """Mean over samples of ``EE / EE_ref`` (the paper's EE ratio against EE-numerical)."""
    return float((ee.double() / ee_ref.double()).mean())


__all__ = ["zf_dinkelbach", "DinkelbachInfo", "lagrangian", "dual_step", "circuit_power", "ee_ratio"]
