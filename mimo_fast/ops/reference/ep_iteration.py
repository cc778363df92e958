"""Reference (pure PyTorch) ``ep_cavity`` and ``ep_update`` (formulas:
:mod:`mimo_fast.ops.ep_iteration`), plus the composition every backend shares: EP's loop
of ``updates`` iterations forward, and its backward by replaying the loop.

A backend provides three pieces -- ``lmmse_cavity`` ((6)-(7) once), its backward, and the
update (8)-(10) with its backward -- and :func:`iterate` / :func:`iterate_backward` chain
them, so a backend whose forward fuses the whole loop (cpu) still shares this backward.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from mimo_fast.ops.reference import ep_lmmse

#: exponents below this (relative to the largest of a node) are clamped before exp, as in
#: mimo_fast.detect.base.softmax_last: exp then never enters the slow denormal range, and
#: e^-80 next to the maximum's 1 changes no float32/float64 sum.
EXP_FLOOR = -80.0


# ----------------------------------------------------------------- (7): the cavity
def cavity(mu, Sigma, lam, gam, v_min):
    """(7b)-(7c) as ``x = (mu - Sigma gam) / (1 - Sigma lam)``, ``v = max(Sigma / (1 - Sigma lam), v_min)``;
    where ``1 - Sigma lam <= 0`` the LMMSE posterior ``(mu, Sigma)`` stands in."""
    den = 1 - Sigma * lam
    ok = den > 0
    den = torch.where(ok, den, torch.ones_like(den))
    x = torch.where(ok, (mu - Sigma * gam) / den, mu)
    v = torch.where(ok, Sigma / den, Sigma).clamp_min(v_min)
    return x, v


def cavity_backward(g_x, g_v, mu, Sigma, lam, gam, v_min):
    """Gradients of (mu, Sigma, lam, gam) from those of (x, v). With ``d = 1 - Sigma lam``:
    ``dx/dmu = 1/d``, ``dx/dgam = -Sigma/d``, ``dx/dd = -x/d``, ``dv/dd = -v/d``,
    ``dv/dSigma = 1/d`` (v unfloored), ``dd/dSigma = -lam``, ``dd/dlam = -Sigma``;
    where the fallback applies, ``x = mu`` and ``v = Sigma``."""
    den = 1 - Sigma * lam
    ok = den > 0
    den = torch.where(ok, den, torch.ones_like(den))
    x = (mu - Sigma * gam) / den
    v_raw = Sigma / den
    g_vr = torch.where(torch.where(ok, v_raw, Sigma) >= v_min, g_v, torch.zeros_like(g_v))
    g_den = -(g_x * x + g_vr * v_raw) / den
    zero = torch.zeros_like(g_x)
    g_mu = torch.where(ok, g_x / den, g_x)
    g_Sigma = torch.where(ok, (g_vr - g_x * gam) / den - g_den * lam, g_vr)
    g_lam = torch.where(ok, -g_den * Sigma, zero)
    g_gam = torch.where(ok, -g_x * Sigma / den, zero)
    return g_mu, g_Sigma, g_lam, g_gam


def lmmse_cavity(gram, rhs, lam, gam, v_min):
    """(6) then (7): ``(x, v, mu, Sigma, info)``; failed matrices (``info != 0``) give NaN rows."""
    mu, Sigma, info = ep_lmmse.forward(gram, rhs, lam, gam)
    x, v = cavity(mu, Sigma, lam, gam, v_min)
    return x, v, mu, Sigma, info


def lmmse_cavity_backward(g_x, g_v, gram, rhs, lam, gam, mu, Sigma, v_min):
    g_mu, g_S, g_lam, g_gam = cavity_backward(g_x, g_v, mu, Sigma, lam, gam, v_min)
    gg, gr, gl, ggm = ep_lmmse.backward(g_mu, g_S, gram, rhs, lam, gam)
    return [gg, gr, gl + g_lam, ggm + g_gam]


# ----------------------------------------------------------------- (8)-(10): the update
def gaussian_logits(x, v, levels, log_prior):
    """EP's cavity times the prior, ``log p(s) - (s - x)^2 / (2 v)``, ``(B, K, L)``."""
    return log_prior - (levels - x[..., None]).square() / (2 * v[..., None])


def softmax(z):
    e = (z - z.amax(-1, keepdim=True)).clamp_min(EXP_FLOOR).exp()
    return e / e.sum(-1, keepdim=True)


def _keep(l1, keep):
    bad = ~(l1 > 0)
    return bad if keep is None else bad | keep


def update(x, v, lam, gam, levels, log_prior, logits, keep, damping, v_min):
    """(8)-(10) on ``q = softmax(logits)`` (EP: ``logits = gaussian_logits(x, v, levels, log_prior)``)."""
    z = gaussian_logits(x, v, levels, log_prior) if logits is None else logits
    p = softmax(z)
    x_hat = (p * levels).sum(-1)                                            # (8a)
    v_hat = (p * (levels - x_hat[..., None]).square()).sum(-1).clamp_min(v_min)  # (8b)
    l1 = 1 / v_hat - 1 / v                                                  # (9a)
    g1 = x_hat / v_hat - x / v                                              # (9b)
    k = _keep(l1, keep)
    l1, g1 = torch.where(k, lam, l1), torch.where(k, gam, g1)
    return (1 - damping) * l1 + damping * lam, (1 - damping) * g1 + damping * gam    # (10)


def update_backward(g_lam, g_gam, x, v, lam, gam, levels, log_prior, logits, keep, damping, v_min):
    """Gradients of (x, v, lam, gam, levels, log_prior, logits) from those of the new
    (lam, gam); None for an absent log_prior/logits. The softmax Jacobian is the exact one
    (the clamped exponents carry weight e^-80 or less)."""
    z = gaussian_logits(x, v, levels, log_prior) if logits is None else logits
    p = softmax(z)
    d = levels - (p * levels).sum(-1, keepdim=True)
    x_hat = (p * levels).sum(-1)
    v_raw = (p * d.square()).sum(-1)
    v_hat = v_raw.clamp_min(v_min)
    l1 = 1 / v_hat - 1 / v
    k = _keep(l1, keep)
    zero = torch.zeros_like(g_lam)
    g_l1 = torch.where(k, zero, (1 - damping) * g_lam)
    g_g1 = torch.where(k, zero, (1 - damping) * g_gam)
    g_lam0 = damping * g_lam + torch.where(k, (1 - damping) * g_lam, zero)
    g_gam0 = damping * g_gam + torch.where(k, (1 - damping) * g_gam, zero)
    # (9): l1 = 1/v_hat - 1/v, g1 = x_hat/v_hat - x/v
    g_vhat = -(g_l1 + g_g1 * x_hat) / v_hat.square()
    g_xhat = g_g1 / v_hat
    g_x = -g_g1 / v
    g_v = (g_l1 + g_g1 * x) / v.square()
    # (8): x_hat = sum p s, v_raw = sum p (s - x_hat)^2
    g_vr = torch.where(v_raw >= v_min, g_vhat, zero)
    g_xhat = g_xhat - 2 * g_vr * (p * d).sum(-1)
    g_p = g_xhat[..., None] * levels + g_vr[..., None] * d.square()
    g_levels = p * (g_xhat[..., None] + 2 * g_vr[..., None] * d)
    g_z = p * (g_p - (p * g_p).sum(-1, keepdim=True))
    if logits is not None:
        return [g_x, g_v, g_lam0, g_gam0, g_levels.sum(0), None, g_z]
    # EP's logits: z = log_prior - (s - x)^2 / (2 v)
    r = levels - x[..., None]
    g_x = g_x + (g_z * r).sum(-1) / v
    g_v = g_v + (g_z * r.square()).sum(-1) / (2 * v.square())
    g_levels = g_levels - g_z * r / v[..., None]
    return [g_x, g_v, g_lam0, g_gam0, g_levels.sum(0), g_z.sum(0), None]


# ----------------------------------------------------------------- EP's loop, any backend
@dataclasses.dataclass(frozen=True)
class Pieces:
    """One backend's (6)-(7) and (8)-(10), forward and backward, in the signatures above."""

    lmmse_cavity: Callable
    lmmse_cavity_backward: Callable
    update: Callable
    update_backward: Callable


def iterate(p: Pieces, gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min):
    """``updates`` EP iterations (6)-(10), then (6)-(7) once more: ``(x, v, mu, Sigma, info)``
    of the last one; ``info`` is each matrix's first failure over the iterations."""
    info = None
    for _ in range(updates):
        x, v, _, _, inf = p.lmmse_cavity(gram, rhs, lam, gam, v_min)
        info = inf if info is None else torch.where(info != 0, info, inf)
        lam, gam = p.update(x, v, lam, gam, levels, log_prior, None, None, damping, v_min)
    x, v, mu, Sigma, inf = p.lmmse_cavity(gram, rhs, lam, gam, v_min)
    if info is not None:
        info = torch.where(info != 0, info, inf)
        bad = (info != 0)[:, None]
        x, v, mu, Sigma = (t.masked_fill(bad, float("nan")) for t in (x, v, mu, Sigma))
    return x, v, mu, Sigma, inf if info is None else info


def iterate_backward(p: Pieces, g_x, g_v, gram, rhs, lam, gam, levels, log_prior, mu, Sigma,
                     updates, damping, v_min):
    """Backward of :func:`iterate`: replays the loop to recover each iteration's (lam, gam)
    and cavity (B x K each; nothing K x K is kept), then runs the pieces' backwards in
    reverse. Returns the gradients of (gram, rhs, lam, gam, levels, log_prior)."""
    lams, gams, cav = [lam], [gam], []
    for _ in range(updates):
        x, v, m, S, _ = p.lmmse_cavity(gram, rhs, lams[-1], gams[-1], v_min)
        cav.append((x, v, m, S))
        lam_t, gam_t = p.update(x, v, lams[-1], gams[-1], levels, log_prior, None, None, damping, v_min)
        lams.append(lam_t)
        gams.append(gam_t)
    g_gram, g_rhs, g_l, g_g = p.lmmse_cavity_backward(g_x, g_v, gram, rhs, lams[-1], gams[-1], mu, Sigma, v_min)
    g_levels = g_lp = None
    for t in range(updates - 1, -1, -1):
        x, v, m, S = cav[t]
        g_xt, g_vt, g_l, g_g, gl_t, gp_t, _ = p.update_backward(
            g_l, g_g, x, v, lams[t], gams[t], levels, log_prior, None, None, damping, v_min)
        g_levels = gl_t if g_levels is None else g_levels + gl_t
        g_lp = gp_t if g_lp is None else g_lp + gp_t
        gg, gr, gl2, gg2 = p.lmmse_cavity_backward(g_xt, g_vt, gram, rhs, lams[t], gams[t], m, S, v_min)
        g_gram, g_rhs, g_l, g_g = g_gram + gg, g_rhs + gr, g_l + gl2, g_g + gg2
    if levels is not None and g_levels is None:
        g_levels, g_lp = torch.zeros_like(levels), torch.zeros_like(log_prior)
    return [g_gram, g_rhs, g_l, g_g, g_levels, g_lp]


PIECES = Pieces(lmmse_cavity, lmmse_cavity_backward, update, update_backward)


def cavity_forward(gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min):
    return iterate(PIECES, gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min)


def cavity_op_backward(g_x, g_v, gram, rhs, lam, gam, levels, log_prior, mu, Sigma, updates, damping, v_min):
    return iterate_backward(PIECES, g_x, g_v, gram, rhs, lam, gam, levels, log_prior, mu, Sigma,
                            updates, damping, v_min)
