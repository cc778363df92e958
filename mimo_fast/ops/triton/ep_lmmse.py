"""Triton backend for ``ep_lmmse``: launch glue around :mod:`mimo_fast.kernels.ep_lmmse`.

One program per matrix, grid ``(B,)`` (chunked past CUDA's grid limit). The kernel keeps the
whole K x K system in registers, so it serves K <= :data:`K_MAX` and refuses larger K with
the reason (the automatic choice then falls back, e.g. to ``reference``'s batched LAPACK /
cuSOLVER path).
"""
from __future__ import annotations

from typing import Optional

import torch

from mimo_fast.ops import registry
from mimo_fast.ops.triton import _launch as L

#: Largest K served. The forward keeps two KP x KP tiles (A and W = L^{-1}) in registers,
#: the backward four (W, S, S diag(g) S, g_A): at K = 64 in float64 that is 4 * 4096 * 8 B
#: = 128 KiB per program, spread over 8 warps ~128 registers a thread; K = 128 would need
#: four times that and spill to local memory, so larger K goes to a blocked factorisation
#: (reference / cuSOLVER) instead.
K_MAX = 64


def blocks(K: int, itemsize: int = 4, backward: bool = False) -> tuple[int, int]:
    """(KP, num_warps): K padded to a power of two >= 16 (tl.dot's minimum) and warps so
    each thread holds ~8-16 elements of one KP x KP tile. Checked by compiling for sm_90
    without a GPU (registers from cuobjdump): no spills, except that the float32 backward at
    KP = 64 spills with 8 warps (255 registers + stack) and fits with 16."""
    KP = L.block(K)
    if KP == 64 and backward and itemsize == 4:
        return KP, 16
    return KP, {16: 2, 32: 4}.get(KP, 8)


def refuse(gram, rhs, *_) -> Optional[str]:
    K = gram.shape[-1]
    if K > K_MAX:
        return (f"K={K} > {K_MAX}: the Triton ep_lmmse kernel keeps the K x K matrix and its "
                f"inverse factor in registers, which holds up to K={K_MAX}")
    return None


def _kernels():
    from mimo_fast.kernels import ep_lmmse as k
    return k


def forward(gram, rhs, lam, gam):
    B, K = rhs.shape
    mean, var = rhs.new_empty(B, K), rhs.new_empty(B, K)
    info = torch.zeros(B, dtype=torch.int32, device=rhs.device)
    if B == 0:
        return mean, var, info
    rhs, lam, gam = rhs.contiguous(), lam.contiguous(), gam.contiguous()
    KP, warps = blocks(K, gram.element_size())
    kern = _kernels().ep_lmmse_fwd_kernel
    with L.on_device(gram):
        for s, e in L.batch_chunks(B):
            g = gram[s:e]
            kern[(e - s,)](g, rhs[s:e], lam[s:e], gam[s:e], mean[s:e], var[s:e], info[s:e],
                           g.stride(0), g.stride(1), g.stride(2), K, KP=KP, num_warps=warps)
    return mean, var, info


def backward(grad_mean, grad_var, gram, rhs, lam, gam):
    B, K = rhs.shape
    g_gram = gram.new_empty(B, K, K)
    g_rhs, g_lam, g_gam = (rhs.new_empty(B, K) for _ in range(3))
    if B == 0:
        return [g_gram, g_rhs, g_lam, g_gam]
    rhs, lam, gam = rhs.contiguous(), lam.contiguous(), gam.contiguous()
    grad_mean, grad_var = grad_mean.contiguous(), grad_var.contiguous()
    KP, warps = blocks(K, gram.element_size(), backward=True)
    kern = _kernels().ep_lmmse_bwd_kernel
    with L.on_device(gram):
        for s, e in L.batch_chunks(B):
            g = gram[s:e]
            kern[(e - s,)](grad_mean[s:e], grad_var[s:e], g, rhs[s:e], lam[s:e], gam[s:e],
                           g_gram[s:e], g_rhs[s:e], g_lam[s:e], g_gam[s:e],
                           g.stride(0), g.stride(1), g.stride(2), K, KP=KP, num_warps=warps)
    return [g_gram, g_rhs, g_lam, g_gam]


registry.get_backend("triton").implement("ep_lmmse", forward, backward, refuse=refuse)
