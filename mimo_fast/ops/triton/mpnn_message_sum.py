"""Triton backend for ``mpnn_message_sum``: the pair kernels
(:class:`mimo_fast.ops.mpnn_message_sum.PairKernels`) as launches of
:mod:`mimo_fast.kernels.mpnn_message_sum`.

The op module does the per-node work (the receiver/sender projections of w1, the last
layer W3 for ``out_act="none"``, the chain rule from grecv/gsend back to node and w1);
this glue only picks tile sizes and launches the kernels, which do everything per pair
(for ``"relu"`` the last layer too). Forward grid: ``(B, cdiv(N, BN))``, chunked over the
batch past CUDA's axis-0 limit; backward: a persistent 1-D grid (a few programs per SM)
looping over the ``B * cdiv(N, BN)`` tiles. For ``"relu"`` the kernels hold W3 (Fo x H2)
on chip, at most :data:`FO_BLOCK_MAX` rows of it: a wider Fo runs as several launches over
row blocks of W3 (each recomputes h2; the relu is per output feature, so the blocks are
independent in forward and their gradients add up in backward).
"""
from __future__ import annotations

from typing import Optional

import torch

from mimo_fast.ops import registry
from mimo_fast.ops.mpnn_message_sum import OP, PairGrads
from mimo_fast.ops.triton import _launch as L

#: Largest hidden width (H1, H2) and edge width E served: a pair tile is (BN*BJ, H) and the
#: backward keeps a (H2, H1) weight-gradient partial in registers; past 256 that spills.
H_MAX = 256
E_MAX = 128
#: Widest block of W3 rows (output features) one "relu" launch holds: its pair tiles are
#: (BN*BJ, BFO) and the backward keeps a (BFO, H2) partial of gW3. Wider Fo is chunked.
FO_BLOCK_MAX = 128


def blocks(N: int, H1: int, H2: int, E: int, itemsize: int, backward: bool = False, Fo: int = 0) -> dict:
    """Tile sizes. BH1/BH2/BE pad the widths to powers of two >= 16 (tl.dot's minimum), BFO
    the output features of one "relu" launch (``Fo`` > 0; <= FO_BLOCK_MAX; 16 and unused
    for "none", ``Fo=0``). BN receivers x BJ senders give BN*BJ pair rows per step, as many
    as fit a register budget of ~8K fp32 values per (rows, H) tile in forward, a quarter of
    that in backward (which holds several such tiles, both orientations of W2 and W3 and the
    weight partials); at least 16 rows for tl.dot. `python tools/triton_resources.py` shows
    what these need on sm_90: the backward still spills registers at every foundation shape
    (and at H1 x H2 = 128 x 64 needs ~184 KiB of shared memory: fits sm_90, not sm_80)."""
    BH1, BH2, BE = L.block(H1), L.block(H2), L.block(E)
    BFO = L.block(Fo, hi=FO_BLOCK_MAX)
    width = max(BH1, BH2, BFO if Fo else 0)
    # float64 multiplies through (rows, K, N) broadcasts instead of tl.dot (see the
    # kernel's _dot): an eighth of the rows keeps that product's registers bounded.
    budget = (8192 if not backward else 2048) * 4 // itemsize // (8 if itemsize == 8 else 1)
    rows = max(16, min(256, L.prev_pow2(budget // width)))
    BJ = min(L.next_pow2(N), rows)
    BN = max(1, min(L.next_pow2(N), rows // BJ))
    BJ = max(BJ, 16 // BN)                                   # tl.dot: >= 16 rows
    warps = 8 if BN * BJ * width * itemsize > 64 * 1024 else 4
    # float32 dots run as three TF32 tensor-core products (tf32x3: float32 accuracy; plain
    # IEEE float32 falls back to FMA and spills); float64 has only IEEE. One stage: the
    # loop-invariant weights already fill much of the shared memory, pipelining would double it.
    prec = "tf32x3" if itemsize == 4 else "ieee"
    return dict(BN=BN, BJ=BJ, BH1=BH1, BH2=BH2, BE=BE, BFO=BFO, PREC=prec, FMA=itemsize == 8,
                num_warps=warps, num_stages=1)


def backward_shared_memory(H1: int, H2: int, Fo: int = 0) -> int:
    """Estimated shared memory of the backward kernel (bytes): mostly W2 (and for "relu",
    ``Fo`` > 0, W3) staged for two tl.dot orientations. Fitted on sm_80/sm_90 float32
    compiles (tools/triton_resources.py; "none": H1 x H2 = 128 x 64 -> 184 KiB, 64 x 32 ->
    72 KiB, 16 x 16 -> 40 KiB; "relu" adds ~18 bytes per element of the (BFO, BH2) W3 block
    plus ~8 per element of a (rows, BFO) pair tile: 128 x 64 with Fo = 16 -> 202 KiB, with
    Fo = 128 -> 328 KiB; 64 x 64, Fo = 16 -> 132 KiB), rounded up. Known to run low for
    H1 x H2 = 256 x 32 (228 KiB measured on sm_90 for "none")."""
    extra = 0
    if Fo:
        BFO = L.block(Fo, hi=FO_BLOCK_MAX)
        rows = max(16, min(256, L.prev_pow2(2048 // max(L.block(H1), L.block(H2), BFO))))  # blocks(): float32 backward
        extra = 18 * BFO * L.block(H2) + 8 * rows * BFO
    return 20 * L.block(H1) * L.block(H2) + 40 * 1024 + extra


def fo_block(Fo: int, H1: int, H2: int, device: torch.device) -> int:
    """Output features per "relu" launch: all of Fo up to FO_BLOCK_MAX, halved (not below
    16) while the backward's shared memory estimate exceeds what the GPU offers."""
    width = L.block(Fo, hi=FO_BLOCK_MAX)
    limit = L.shared_memory_limit(device)
    while limit is not None and width > 16 and backward_shared_memory(H1, H2, width) > limit:
        width //= 2
    return min(Fo, width)


def refuse(node, edge, *weights) -> Optional[str]:
    """Size limits. ``weights`` is (w1, b1, w2, b2, w3, b3) as the op passes them to dispatch.
    Dispatch does not say which out_act runs, so the shared memory check counts the
    smallest W3 block "relu" needs (16 rows); a wider Fo only means more launches."""
    N, E = node.shape[1], edge.shape[-1]
    H1, H2 = (weights[0].shape[0], weights[2].shape[0]) if len(weights) >= 3 else (1, 1)
    Fo = weights[4].shape[0] if len(weights) >= 5 else 0
    if max(H1, H2) > H_MAX:
        return (f"hidden width {max(H1, H2)} > {H_MAX}: the Triton mpnn_message_sum kernel keeps "
                f"(pairs x H) tiles and a (H2 x H1) partial in registers")
    if E > E_MAX:
        return f"edge width E={E} > {E_MAX}: the Triton mpnn_message_sum kernel keeps edge tiles in registers"
    limit = L.shared_memory_limit(node.device)
    need = backward_shared_memory(H1, H2, min(Fo, 16))
    if limit is not None and need > limit:
        return (f"H1 x H2 = {H1} x {H2}: the Triton mpnn_message_sum backward needs about "
                f"{need // 1024} KiB of shared memory, this GPU offers {limit // 1024} KiB")
    return L.tiles_reason("mpnn_message_sum", L.cdiv(N, blocks(N, H1, H2, E, node.element_size())["BN"]))


def _kernels():
    from mimo_fast.kernels import mpnn_message_sum as k
    return k


def _fo_chunks(relu_out: bool, w3: torch.Tensor, H1: int, H2: int) -> list:
    """[start, stop) row blocks of W3, one per launch; [(0, Fo)] for "none" (W3 unused)."""
    Fo = w3.shape[0]
    if not relu_out:
        return [(0, Fo)]
    step = fo_block(Fo, H1, H2, w3.device)
    return [(a, min(Fo, a + step)) for a in range(0, Fo, step)]


def _common(recv, edge, we, w2, b2, mask):
    E = edge.shape[-1]
    m = recv if mask is None else mask.to(torch.int8).contiguous()
    if E == 0:  # nothing to read: hand the kernel a real buffer instead of an empty one
        edge, we = recv[:, :, None, :], w2
    strides = (*edge.stride(), *we.stride(), *w2.stride())
    return edge, we, b2.contiguous(), m, strides


def forward(recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool):
    """"none": s (B, N, H2) = sum_{valid j} h2; "relu": (B, N, Fo) = sum_{valid j} relu(W3 h2 + b3)."""
    B, N, H1 = recv.shape
    H2, E = w2.shape[0], edge.shape[-1]
    edge_k, we_k, b2c, m, strides = _common(recv, edge, we, w2, b2, mask)
    kern = _kernels().mpnn_fwd_kernel
    outs = []
    for a, z in _fo_chunks(relu_out, w3, H1, H2):
        Fo = z - a
        w3c, b3c = w3[a:z], b3[a:z].contiguous()
        out = recv.new_empty(B, N, Fo if relu_out else H2)
        bl = blocks(N, H1, H2, E, recv.element_size(), Fo=Fo if relu_out else 0)
        launch = dict(num_warps=bl.pop("num_warps"), num_stages=bl.pop("num_stages"))
        with L.on_device(recv):
            for c, d in L.batch_chunks(B):
                kern[(d - c, L.cdiv(N, bl["BN"]))](
                    recv[c:d], send[c:d], edge_k[c:d], we_k, w2, b2c, w3c, b3c, m[c:d], out[c:d],
                    N, H1, H2, E, Fo, *strides, *w3c.stride(),
                    HAS_EDGE=E > 0, HAS_MASK=mask is not None, RELU_OUT=relu_out, **bl, **launch)
        outs.append(out)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


def backward(gin, recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool) -> PairGrads:
    """The pair kernels' gradients (:class:`PairGrads`); gin (B, N, H2) for "none",
    (B, N, Fo) for "relu"."""
    B, N, H1 = recv.shape
    H2, E = w2.shape[0], edge.shape[-1]
    edge_k, we_k, b2c, m, strides = _common(recv, edge, we, w2, b2, mask)
    kern = _kernels().mpnn_bwd_kernel
    grecv, gsend = recv.new_empty(B, N, H1), recv.new_zeros(B, N, H1)
    gedge = recv.new_empty(B, N, N, E)
    s = None if relu_out else recv.new_empty(B, N, H2)
    gw2, gb2, gwe = w2.new_zeros(H2, H1), w2.new_zeros(H2), w2.new_zeros(H1, E)
    gw3, gb3 = (w3.new_zeros(w3.shape), w3.new_zeros(w3.shape[0])) if relu_out else (None, None)
    for k, (a, z) in enumerate(_fo_chunks(relu_out, w3, H1, H2)):
        Fo = z - a
        w3c, b3c = w3[a:z], b3[a:z].contiguous()
        gin_c = gin[..., a:z].contiguous() if relu_out else gin
        # the first block of W3 writes grecv and gedge, later ones add theirs (gsend is atomic)
        grecv_c = grecv if k == 0 else recv.new_empty(B, N, H1)
        gedge_c = gedge if k == 0 else recv.new_empty(B, N, N, E)
        gedge_k = gedge_c if E else recv[:, :, None, :]
        bl = blocks(N, H1, H2, E, recv.element_size(), backward=True, Fo=Fo if relu_out else 0)
        launch = dict(num_warps=bl.pop("num_warps"), num_stages=bl.pop("num_stages"))
        NT = L.cdiv(N, bl["BN"])
        with L.on_device(recv):
            # chunks keep each launch's tile count (and tile index arithmetic) in int32
            for c, d in L.batch_chunks(B, max(1, L.MAX_GRID_X // NT)):
                P = L.num_programs(recv.device, (d - c) * NT)
                w2p, b2p, wep = recv.new_empty(P, H2, H1), recv.new_empty(P, H2), recv.new_empty(P, H1, max(E, 1))
                w3p, b3p = (recv.new_empty(P, Fo, H2), recv.new_empty(P, Fo)) if relu_out else (w2p, b2p)
                kern[(P,)](recv[c:d], send[c:d], edge_k[c:d], we_k, w2, b2c, w3c, b3c, m[c:d], gin_c[c:d],
                           recv if relu_out else s[c:d], grecv_c[c:d], gsend[c:d], gedge_k[c:d],
                           w2p, b2p, wep, w3p, b3p,
                           N, H1, H2, E, Fo, (d - c) * NT, NT, *strides, *w3c.stride(),
                           HAS_EDGE=E > 0, HAS_MASK=mask is not None, RELU_OUT=relu_out, **bl, **launch)
                gw2 += w2p.sum(0)
                gb2 += b2p.sum(0)
                gwe += wep[:, :, :E].sum(0)
                if relu_out:
                    gw3[a:z] += w3p.sum(0)
                    gb3[a:z] += b3p.sum(0)
        if k:
            grecv += grecv_c
            gedge += gedge_c
    return PairGrads(grecv, gsend, gedge, gwe, gw2, gb2, s, gw3, gb3)


registry.get_backend("triton").implement(OP, forward, backward, refuse=refuse)
