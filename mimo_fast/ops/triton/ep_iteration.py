"""Triton backend for ``ep_cavity`` and ``ep_update``: launch glue around
:mod:`mimo_fast.kernels.ep_iteration`.

``ep_cavity``'s LMMSE step (6) is the Triton ``ep_lmmse`` kernel (so K <= its
:data:`~mimo_fast.ops.triton.ep_lmmse.K_MAX`), its cavity (7) an elementwise kernel;
``updates`` > 0 chains them with the update kernel through the shared loop and replayed
backward of :mod:`mimo_fast.ops.reference.ep_iteration`. Grids are 1-D over the ``B * K``
nodes, ``BLOCK`` a program.
"""
from __future__ import annotations

import torch

from mimo_fast.ops import registry
from mimo_fast.ops.reference import ep_iteration as ref
from mimo_fast.ops.triton import _launch as L
from mimo_fast.ops.triton import ep_lmmse

BLOCK_ELEMENTWISE = 256
#: The update kernels hold a (nodes x LP) tile of exponents, LP = L padded to a power of two:
#: 64 nodes a program, fewer for wide alphabets so a tile stays within TILE elements (32 KB in
#: float64 over the default 4 warps: 64 x 16 for the PAM readouts, 16 x 256 for 256-QAM's
#: complex readout). Not tuned: there was no GPU to measure on.
BLOCK_NODES = 64
TILE = 4096


def _block_nodes(LP: int) -> int:
    return max(1, min(BLOCK_NODES, TILE // LP))


def _kernels():
    from mimo_fast.kernels import ep_iteration as k
    return k


def _elementwise(kern, n, block, *tensors, **scalars):
    # One launch: CUDA's 2**31 - 1 programs on grid axis 0 would be over 5e11 nodes here,
    # far past any memory, so no batch chunking is needed (unlike ep_lmmse's one program
    # a matrix).
    kern[(L.cdiv(n, block),)](*tensors, n, *scalars.values(), BLOCK=block)


def lmmse_cavity(gram, rhs, lam, gam, v_min):
    mu, Sigma, info = ep_lmmse.forward(gram, rhs, lam, gam)
    lam, gam = lam.contiguous(), gam.contiguous()
    x, v = torch.empty_like(mu), torch.empty_like(mu)
    if mu.numel():
        with L.on_device(mu):
            _elementwise(_kernels().ep_cavity_fwd_kernel, mu.numel(), BLOCK_ELEMENTWISE,
                         mu.view(-1), Sigma.view(-1), lam.view(-1), gam.view(-1), x.view(-1), v.view(-1),
                         v_min=float(v_min))
    return x, v, mu, Sigma, info


def lmmse_cavity_backward(g_x, g_v, gram, rhs, lam, gam, mu, Sigma, v_min):
    flat = [t.contiguous().view(-1) for t in (g_x, g_v, mu, Sigma, lam, gam)]
    outs = [torch.empty_like(mu) for _ in range(4)]
    if mu.numel():
        with L.on_device(mu):
            _elementwise(_kernels().ep_cavity_bwd_kernel, mu.numel(), BLOCK_ELEMENTWISE,
                         *flat, *(o.view(-1) for o in outs), v_min=float(v_min))
    g_mu, g_S, g_lam, g_gam = outs
    gg, gr, gl, ggm = ep_lmmse.backward(g_mu, g_S, gram, rhs, lam, gam)
    return [gg, gr, gl + g_lam, ggm + g_gam]


def _update_inputs(x, v, lam, gam, levels, log_prior, logits, keep):
    ins = [t.contiguous() for t in (x, v, lam, gam, levels)]
    ins.append(log_prior.contiguous() if log_prior is not None else ins[4])     # dummy when absent
    ins.append(logits.contiguous() if logits is not None else ins[0])
    ins.append(keep.contiguous().view(torch.uint8) if keep is not None else ins[0])
    return ins


def _launch_nodes(kern, B, K, Lv, ins, outs, scalars, logits, keep):
    LP = L.next_pow2(Lv)
    block = _block_nodes(LP)
    kern[(L.cdiv(B * K, block),)](*ins, *outs, B * K, K, Lv, *scalars, HAS_LOGITS=logits is not None,
                                  HAS_KEEP=keep is not None, BLOCK=block, LP=LP)


def update(x, v, lam, gam, levels, log_prior, logits, keep, damping, v_min):
    B, K = x.shape
    lam_out, gam_out = x.new_empty(B, K), x.new_empty(B, K)
    if B:
        ins = _update_inputs(x, v, lam, gam, levels, log_prior, logits, keep)
        with L.on_device(x):
            _launch_nodes(_kernels().ep_update_fwd_kernel, B, K, levels.shape[1], ins, [lam_out, gam_out],
                          (float(damping), float(v_min)), logits, keep)
    return lam_out, gam_out


def update_backward(g_lam, g_gam, x, v, lam, gam, levels, log_prior, logits, keep, damping, v_min):
    B, K = x.shape
    Lv = levels.shape[1]
    g_x, g_v, g_lam0, g_gam0 = (x.new_empty(B, K) for _ in range(4))
    g_z, g_lev = x.new_zeros(B, K, Lv), x.new_zeros(B, K, Lv)
    if B:
        ins = _update_inputs(x, v, lam, gam, levels, log_prior, logits, keep)
        with L.on_device(x):
            _launch_nodes(_kernels().ep_update_bwd_kernel, B, K, Lv, [g_lam.contiguous(), g_gam.contiguous()] + ins,
                          [g_x, g_v, g_lam0, g_gam0, g_z, g_lev], (float(damping), float(v_min)), logits, keep)
    if logits is not None:
        return [g_x, g_v, g_lam0, g_gam0, g_lev.sum(0), None, g_z]
    return [g_x, g_v, g_lam0, g_gam0, g_lev.sum(0), g_z.sum(0), None]


PIECES = ref.Pieces(lmmse_cavity, lmmse_cavity_backward, update, update_backward)


def cavity_forward(gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min):
    return ref.iterate(PIECES, gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min)


def cavity_backward(g_x, g_v, gram, rhs, lam, gam, levels, log_prior, mu, Sigma, updates, damping, v_min):
    return ref.iterate_backward(PIECES, g_x, g_v, gram, rhs, lam, gam, levels, log_prior, mu, Sigma,
                                updates, damping, v_min)


def refuse(gram, rhs, *_):
    return ep_lmmse.refuse(gram, rhs)


TRITON = registry.get_backend("triton")
TRITON.implement("ep_cavity", cavity_forward, cavity_backward, refuse=refuse)
TRITON.implement("ep_update", update, update_backward)
