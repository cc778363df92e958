"""`cpu` backend of :func:`mimo_fast.ops.ep_cavity` and :func:`mimo_fast.ops.ep_update`
(kernels: csrc/ep_iteration/cpu/ep_iteration.cpp).

Forward: ``ep_cavity`` is one fused C++ pass per group of vectors over all ``updates + 1``
iterations; ``ep_update`` one C++ pass over the nodes. Backward: ``ep_update``'s in C++
(per node; the batch sums of the level and prior gradients in torch); ``ep_cavity``'s
through the shared replay of :func:`mimo_fast.ops.reference.ep_iteration.iterate_backward`
with these kernels as its pieces: the cavity's gradient in C++
(``ep_cavity_backward_local``) then the cpu ``ep_lmmse`` backward, which refactors the
matrix instead of keeping it.
"""
from __future__ import annotations

import torch

from mimo_fast import _ext
from mimo_fast.ops import native, registry
from mimo_fast.ops.cpu import ep_lmmse
from mimo_fast.ops.reference import ep_iteration as ref
from mimo_fast.ops.threads import num_threads

CAVITY = native.Signature(
    "ep_cavity_forward", "gram rhs lam gam levels? log_prior? >x_obs >v_obs >mu >Sigma >info:int32",
    "B K L updates damping:f v_min:f nthreads")
CAVITY_BACKWARD = native.Signature(
    "ep_cavity_backward_local", "g_x g_v mu Sigma lam gam >g_mu >g_Sigma >g_lam >g_gam", "n v_min:f")
UPDATE = native.Signature(
    "ep_update_forward", "x_obs v_obs lam gam levels log_prior? logits? keep:bool? >lam_out >gam_out",
    "B K L damping:f v_min:f nthreads")
UPDATE_BACKWARD = native.Signature(
    "ep_update_backward",
    "g_lam g_gam x_obs v_obs lam gam levels log_prior? logits? keep:bool? >g_x >g_v >g_lam0 >g_gam0 >g_z >g_lev?",
    "B K L damping:f v_min:f nthreads")


def cavity_forward(gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min):
    B, K = rhs.shape
    L = 0 if levels is None else levels.shape[1]
    x, v, mu, Sigma = (rhs.new_empty(B, K) for _ in range(4))
    info = torch.empty(B, dtype=torch.int32)
    CAVITY.call(_ext.C.ep_cavity_forward, gram, rhs, lam, gam, levels, log_prior, x, v, mu, Sigma, info,
                B, K, L, updates, float(damping), float(v_min), num_threads())
    return x, v, mu, Sigma, info


def _lmmse_cavity(gram, rhs, lam, gam, v_min):
    return cavity_forward(gram, rhs, lam, gam, None, None, 0, 0.0, v_min)


def _lmmse_cavity_backward(g_x, g_v, gram, rhs, lam, gam, mu, Sigma, v_min):
    g_mu, g_S, g_lam, g_gam = (mu.new_empty(mu.shape) for _ in range(4))
    CAVITY_BACKWARD.call(_ext.C.ep_cavity_backward_local, g_x, g_v, mu, Sigma, lam, gam,
                         g_mu, g_S, g_lam, g_gam, mu.numel(), float(v_min))
    gg, gr, gl, ggm = ep_lmmse.backward(g_mu, g_S, gram, rhs, lam, gam)
    return [gg, gr, gl.add_(g_lam), ggm.add_(g_gam)]


def update_forward(x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, damping, v_min):
    B, K = x_obs.shape
    lam_out, gam_out = x_obs.new_empty(B, K), x_obs.new_empty(B, K)
    UPDATE.call(_ext.C.ep_update_forward, x_obs, v_obs, lam, gam, levels, log_prior, logits, keep,
                lam_out, gam_out, B, K, levels.shape[1], float(damping), float(v_min), num_threads())
    return lam_out, gam_out


def update_backward(g_lam, g_gam, x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, damping, v_min):
    B, K = x_obs.shape
    L = levels.shape[1]
    g_x, g_v, g_lam0, g_gam0 = (x_obs.new_empty(B, K) for _ in range(4))
    g_z, g_lev = x_obs.new_empty(B, K, L), x_obs.new_empty(B, K, L)
    UPDATE_BACKWARD.call(_ext.C.ep_update_backward, g_lam, g_gam, x_obs, v_obs, lam, gam, levels, log_prior,
                         logits, keep, g_x, g_v, g_lam0, g_gam0, g_z, g_lev, B, K, L, float(damping),
                         float(v_min), num_threads())
    g_levels = g_lev.sum(0)
    if logits is not None:
        return [g_x, g_v, g_lam0, g_gam0, g_levels, None, g_z]
    return [g_x, g_v, g_lam0, g_gam0, g_levels, g_z.sum(0), None]


PIECES = ref.Pieces(_lmmse_cavity, _lmmse_cavity_backward, update_forward, update_backward)


def cavity_backward(g_x, g_v, gram, rhs, lam, gam, levels, log_prior, mu, Sigma, updates, damping, v_min):
    return ref.iterate_backward(PIECES, g_x, g_v, gram, rhs, lam, gam, levels, log_prior, mu, Sigma,
                                updates, damping, v_min)


CPU = registry.get_backend("cpu")
CPU.implement("ep_cavity", cavity_forward, cavity_backward)
CPU.implement("ep_update", update_forward, update_backward)
