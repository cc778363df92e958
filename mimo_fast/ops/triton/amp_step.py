"""Triton backend for ``amp_step``: launch glue around :mod:`mimo_fast.kernels.amp_step`.

Complex tensors go to the kernels as ``torch.view_as_real`` views (H keeps its strides;
the vectors are made contiguous). Row passes run on a ``(B, cdiv(M, ROW_BM))`` grid,
column passes on ``(B, cdiv(N, COL_BN))``; the batch is chunked past CUDA's axis-0 limit.
"""
from __future__ import annotations

from typing import Optional

import torch

from mimo_fast.ops import registry
from mimo_fast.ops.triton import _launch as L


def blocks(M: int, N: int) -> dict:
    """Tile sizes. Row passes: ROW_BM rows per program, streaming ROW_BN columns at a time
    (long along n, H's contiguous axis). Column passes: COL_BN columns per program,
    streaming COL_BM rows. Sized by compiling for sm_90 without a GPU: 32 x 128 tiles
    spilled registers at 4 warps; these (2048 complex entries a tile, 4 warps; 8 for the
    column pass of backward, which holds the most per entry) compile without spills in
    float32 and float64."""
    return dict(ROW_BM=L.block(M, hi=16), ROW_BN=L.block(N, hi=64),
                COL_BM=L.block(M, hi=64), COL_BN=L.block(N, hi=32))


def refuse(H, *_) -> Optional[str]:
    B, M, N = H.shape
    bl = blocks(M, N)
    return (L.tiles_reason("amp_step row pass", L.cdiv(M, bl["ROW_BM"]))
            or L.tiles_reason("amp_step column pass", L.cdiv(N, bl["COL_BN"])))


def _kernels():
    from mimo_fast.kernels import amp_step as k
    return k


def _r(t: torch.Tensor) -> torch.Tensor:
    """A contiguous real view of a complex vector (conjugate bits resolved)."""
    return torch.view_as_real(t.resolve_conj().contiguous())


def _rows(k, Hr, x, v, y, z_prev, V_prev, noise_var, bl, s, e, V=None, z=None):
    """Row pass for batch slice [s, e): (V, z, w, t) of the slice, all real views; V and z
    go to the given buffers when passed (the forward's outputs)."""
    B, M, N = e - s, Hr.shape[1], Hr.shape[2]
    V = Hr.new_empty(B, M) if V is None else V
    z = Hr.new_empty(B, M, 2) if z is None else z
    w, t = Hr.new_empty(B, M), Hr.new_empty(B, M, 2)
    Hs = Hr[s:e]
    k.amp_rows_kernel[(B, L.cdiv(M, bl["ROW_BM"]))](
        Hs, Hs.stride(0), Hs.stride(1), Hs.stride(2), x[s:e], v[s:e], y[s:e], z_prev[s:e],
        V_prev[s:e], noise_var[s:e], V, z, w, t, M, N, BM=bl["ROW_BM"], BN=bl["ROW_BN"])
    return V, z, w, t


def forward(H, y, x, v, z_prev, V_prev, noise_var):
    B, M, N = H.shape
    r, Sigma = torch.empty_like(x), v.new_empty(B, N)
    z, V = torch.empty_like(y), V_prev.new_empty(B, M)
    if B == 0:
        return r, Sigma, z, V
    k, bl = _kernels(), blocks(M, N)
    Hr = torch.view_as_real(H.resolve_conj())
    xr, yr, zpr = _r(x), _r(y), _r(z_prev)
    v, V_prev, noise_var = v.contiguous(), V_prev.contiguous(), noise_var.contiguous()
    with L.on_device(H):
        for s, e in L.batch_chunks(B):
            _, _, w, t = _rows(k, Hr, xr, v, yr, zpr, V_prev, noise_var, bl, s, e,
                               V=V[s:e], z=torch.view_as_real(z)[s:e])
            Hs = Hr[s:e]
            k.amp_cols_kernel[(e - s, L.cdiv(N, bl["COL_BN"]))](
                Hs, Hs.stride(0), Hs.stride(1), Hs.stride(2), xr[s:e], w, t, w, w, torch.view_as_real(r)[s:e], Sigma[s:e], M, N,
                BM=bl["COL_BM"], BN=bl["COL_BN"], BACKWARD=False)
    return r, Sigma, z, V


def backward(grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var):
    B, M, N = H.shape
    g_H = torch.empty(B, M, N, dtype=H.dtype, device=H.device)
    g_y, g_x, g_zp = torch.empty_like(y), torch.empty_like(x), torch.empty_like(z_prev)
    g_v, g_Vp = v.new_empty(B, N), V_prev.new_empty(B, M)
    g_noise = noise_var.new_empty(B)
    if B == 0:
        return [g_H, g_y, g_x, g_v, g_zp, g_Vp, g_noise]
    k, bl = _kernels(), blocks(M, N)
    Hr = torch.view_as_real(H.resolve_conj())
    xr, yr, zpr, grr, gzr = _r(x), _r(y), _r(z_prev), _r(grad_r), _r(grad_z)
    v, V_prev, noise_var = v.contiguous(), V_prev.contiguous(), noise_var.contiguous()
    grad_Sigma, grad_V = grad_Sigma.contiguous(), grad_V.contiguous()
    g_Hr, g_yr, g_xr, g_zpr = (torch.view_as_real(g) for g in (g_H, g_y, g_x, g_zp))
    rows, cols = L.cdiv(M, bl["ROW_BM"]), L.cdiv(N, bl["COL_BN"])
    with L.on_device(H):
        for s, e in L.batch_chunks(B):
            n = e - s
            Hs = Hr[s:e]
            st = (Hs, Hs.stride(0), Hs.stride(1), Hs.stride(2))
            V, z, w, t = _rows(k, Hr, xr, v, yr, zpr, V_prev, noise_var, bl, s, e)
            g_u = torch.empty(n, N, 2, dtype=Hr.dtype, device=H.device)
            g_q = Hr.new_empty(n, N)
            k.amp_cols_kernel[(n, cols)](*st, xr[s:e], w, t, grr[s:e], grad_Sigma[s:e], g_u, g_q, M, N,
                                         BM=bl["COL_BM"], BN=bl["COL_BN"], BACKWARD=True)
            g_zt = torch.empty(n, M, 2, dtype=Hr.dtype, device=H.device)
            g_Vt, noise_rows = Hr.new_empty(n, M), Hr.new_empty(n, M)
            k.amp_rows_bwd_kernel[(n, rows)](*st, g_u, g_q, yr[s:e], zpr[s:e], V_prev[s:e], noise_var[s:e],
                                             V, z, w, gzr[s:e], grad_V[s:e],
                                             g_zt, g_Vt, g_yr[s:e], g_zpr[s:e], g_Vp[s:e], noise_rows, M, N,
                                             BM=bl["ROW_BM"], BN=bl["ROW_BN"])
            g_noise[s:e] = noise_rows.sum(1)
            k.amp_cols_bwd_kernel[(n, cols)](*st, xr[s:e], v[s:e], t, w, g_zt, g_Vt, g_u, g_q, grr[s:e],
                                             g_Hr[s:e], g_xr[s:e], g_v[s:e], M, N,
                                             BM=bl["COL_BM"], BN=bl["COL_BN"], num_warps=8)
    return [g_H, g_y, g_x, g_v, g_zp, g_Vp, g_noise]


registry.get_backend("triton").implement("amp_step", forward, backward, refuse=refuse)
