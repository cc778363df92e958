"""Triton backend for ``mpnn_message_sum``: launch glue around
:mod:`mimo_fast.kernels.mpnn_message_sum`.

The glue does the per-node work as GEMMs (the receiver/sender projections of w1 before,
the last layer W3 after, and in backward the chain rule from grecv/gsend back to node and
w1) and the kernels do everything per pair. Forward grid: ``(B, cdiv(N, BN))``, chunked
over the batch past CUDA's axis-0 limit; backward: a persistent 1-D grid (a few programs
per SM) looping over the ``B * cdiv(N, BN)`` tiles.
"""
from __future__ import annotations

from typing import Optional

import torch

from mimo_fast.ops.backends import TRITON
from mimo_fast.ops.triton import _launch as L

#: Largest hidden width (H1, H2) and edge width E served: a pair tile is (BN*BJ, H) and the
#: backward keeps a (H2, H1) weight-gradient partial in registers; past 256 that spills.
H_MAX = 256
E_MAX = 128


def blocks(N: int, H1: int, H2: int, E: int, itemsize: int, backward: bool = False) -> dict:
    """Tile sizes. BH1/BH2/BE pad the widths to powers of two >= 16 (tl.dot's minimum).
    BN receivers x BJ senders give BN*BJ pair rows per step, as many as fit a register
    budget of ~8K fp32 values per (rows, H) tile in forward, a quarter of that in backward
    (which holds several such tiles, both orientations of W2 and the weight partials);
    at least 16 rows for tl.dot. `python bench/triton_resources.py` shows what these need
    on sm_90: the backward still spills registers at every foundation shape (and at
    H1 x H2 = 128 x 64 needs ~208 KiB of shared memory: fits sm_90, not sm_80)."""
    BH1, BH2, BE = L.block(H1), L.block(H2), L.block(E)
    # float64 multiplies through (rows, H1, H2) broadcasts instead of tl.dot (see the
    # kernel's _dot): an eighth of the rows keeps that product's registers bounded.
    budget = (8192 if not backward else 2048) * 4 // itemsize // (8 if itemsize == 8 else 1)
    rows = max(16, min(256, L.prev_pow2(budget // max(BH1, BH2))))
    BJ = min(L.next_pow2(N), rows)
    BN = max(1, min(L.next_pow2(N), rows // BJ))
    BJ = max(BJ, 16 // BN)                                   # tl.dot: >= 16 rows
    warps = 8 if BN * BJ * max(BH1, BH2) * itemsize > 64 * 1024 else 4
    # float32 dots run as three TF32 tensor-core products (tf32x3: float32 accuracy; plain
    # IEEE float32 falls back to FMA and spills); float64 has only IEEE. One stage: the
    # loop-invariant weights already fill much of the shared memory, pipelining would double it.
    prec = "tf32x3" if itemsize == 4 else "ieee"
    return dict(BN=BN, BJ=BJ, BH1=BH1, BH2=BH2, BE=BE, PREC=prec, FMA=itemsize == 8,
                num_warps=warps, num_stages=1)


def backward_shared_memory(H1: int, H2: int) -> int:
    """Estimated shared memory of the backward kernel (bytes): mostly W2 staged for two
    tl.dot orientations. Fitted on sm_80/sm_90 compiles (bench/triton_resources.py:
    H1 x H2 = 128 x 64 -> 184 KiB, 64 x 32 -> 72 KiB, 16 x 16 -> 40 KiB), rounded up."""
    return 20 * L.block(H1) * L.block(H2) + 40 * 1024


def refuse(node, edge, *weights) -> Optional[str]:
    """Size limits. ``weights`` is (w1, b1, w2, ...) as the op passes them to dispatch."""
    N, E = node.shape[1], edge.shape[-1]
    H1, H2 = (weights[0].shape[0], weights[2].shape[0]) if len(weights) >= 3 else (1, 1)
    if max(H1, H2) > H_MAX:
        return (f"hidden width {max(H1, H2)} > {H_MAX}: the Triton mpnn_message_sum kernel keeps "
                f"(pairs x H) tiles and a (H2 x H1) partial in registers")
    if E > E_MAX:
        return f"edge width E={E} > {E_MAX}: the Triton mpnn_message_sum kernel keeps edge tiles in registers"
    limit = L.shared_memory_limit(node.device)
    if limit is not None and backward_shared_memory(H1, H2) > limit:
        return (f"H1 x H2 = {H1} x {H2}: the Triton mpnn_message_sum backward needs about "
                f"{backward_shared_memory(H1, H2) // 1024} KiB of shared memory, this GPU offers {limit // 1024} KiB")
    return L.tiles_reason("mpnn_message_sum", L.cdiv(N, blocks(N, H1, H2, E, node.element_size())["BN"]))


def _kernels():
    from mimo_fast.kernels import mpnn_message_sum as k
    return k


def _count(mask, B, N, like):
    """Valid senders per receiver: N - 1, or (#unmasked - 1) for unmasked receivers, 0 else."""
    if mask is None:
        return like.new_full((B, N, 1), max(N - 1, 0))
    m = mask.to(like.dtype)
    return (m * (m.sum(-1, keepdim=True) - m))[..., None]


def _common(node, edge, w1, b1, w2, mask):
    F, E = node.shape[-1], edge.shape[-1]
    recv = torch.addmm(b1, node.reshape(-1, F), w1[:, :F].T).reshape(*node.shape[:2], -1)
    send = (node.reshape(-1, F) @ w1[:, F:2 * F].T).reshape(*node.shape[:2], -1)
    we = w1[:, 2 * F:]
    m = recv if mask is None else mask.to(torch.int8).contiguous()
    if E == 0:  # nothing to read: hand the kernel a real buffer instead of an empty one
        edge, we = recv[:, :, None, :], w2
    strides = (*edge.stride(), *we.stride(), *w2.stride())
    return recv, send, edge, we, m, strides


def forward(node, edge, w1, b1, w2, b2, w3, b3, mask):
    B, N, _ = node.shape
    H1, H2, E = w1.shape[0], w2.shape[0], edge.shape[-1]
    if B == 0:
        return node.new_zeros(0, N, w3.shape[0])
    recv, send, edge_k, we, m, strides = _common(node, edge, w1, b1, w2, mask)
    s = node.new_empty(B, N, H2)
    bl = blocks(N, H1, H2, E, node.element_size())
    launch = dict(num_warps=bl.pop("num_warps"), num_stages=bl.pop("num_stages"))
    kern = _kernels().mpnn_fwd_kernel
    with L.on_device(node):
        for a, z in L.batch_chunks(B):
            kern[(z - a, L.cdiv(N, bl["BN"]))](
                recv[a:z], send[a:z], edge_k[a:z], we, w2, b2.contiguous(), m[a:z], s[a:z], N, H1, H2, E, *strides,
                HAS_EDGE=E > 0, HAS_MASK=mask is not None, **bl, **launch)
    return s @ w3.T + _count(mask, B, N, s) * b3


def backward(grad, node, edge, w1, b1, w2, b2, w3, b3, mask):
    B, N, F = node.shape
    H1, H2, E = w1.shape[0], w2.shape[0], edge.shape[-1]
    if B == 0:
        return [torch.zeros_like(t) for t in (node, edge, w1, b1, w2, b2, w3, b3)]
    g = grad if mask is None else grad * mask[:, :, None].to(grad.dtype)
    gs = (g @ w3).contiguous()
    recv, send, edge_k, we, m, strides = _common(node, edge, w1, b1, w2, mask)
    bl = blocks(N, H1, H2, E, node.element_size(), backward=True)
    launch = dict(num_warps=bl.pop("num_warps"), num_stages=bl.pop("num_stages"))
    NT = L.cdiv(N, bl["BN"])
    s, grecv = node.new_empty(B, N, H2), node.new_empty(B, N, H1)
    gsend = node.new_zeros(B, N, H1)
    gedge = node.new_empty(B, N, N, E)
    gedge_k = gedge if E else recv[:, :, None, :]
    kern = _kernels().mpnn_bwd_kernel
    gw2 = w2.new_zeros(H2, H1)
    gb2 = b2.new_zeros(H2)
    gwe = w1.new_zeros(H1, E)
    with L.on_device(node):
        # chunks keep each launch's tile count (and tile index arithmetic) in int32
        for a, z in L.batch_chunks(B, max(1, L.MAX_GRID_X // NT)):
            P = L.num_programs(node.device, (z - a) * NT)
            w2p, b2p, wep = node.new_empty(P, H2, H1), node.new_empty(P, H2), node.new_empty(P, H1, max(E, 1))
            kern[(P,)](recv[a:z], send[a:z], edge_k[a:z], we, w2, b2.contiguous(), m[a:z], gs[a:z],
                       s[a:z], grecv[a:z], gsend[a:z], gedge_k[a:z], w2p, b2p, wep,
                       N, H1, H2, E, (z - a) * NT, NT, *strides,
                       HAS_EDGE=E > 0, HAS_MASK=mask is not None, **bl, **launch)
            gw2 += w2p.sum(0)
            gb2 += b2p.sum(0)
            gwe += wep[:, :, :E].sum(0)
    gw3 = torch.einsum("bno,bnh->oh", g, s)
    gb3 = (g * _count(mask, B, N, g)).sum((0, 1))
    gb1 = grecv.sum((0, 1))
    gwa = torch.einsum("bnh,bnf->hf", grecv, node)
    gwb = torch.einsum("bnh,bnf->hf", gsend, node)
    gw1 = torch.cat([gwa, gwb, gwe], dim=1)
    gnode = grecv @ w1[:, :F] + gsend @ w1[:, F:2 * F]
    return [gnode, gedge, gw1, gb1, gw2, gb2, gw3, gb3]


TRITON.implement("mpnn_message_sum", forward, backward, refuse=refuse)
