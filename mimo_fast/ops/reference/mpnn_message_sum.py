"""Reference (pure PyTorch) pair kernels of :func:`mimo_fast.ops.mpnn_message_sum`
(the contract is :class:`mimo_fast.ops.mpnn_message_sum.PairKernels`; the op module does
the first-layer split and the per-node layers), written for clarity first.

It holds ``(b, N, N, H)`` activations for a chunk of ``b`` batch elements; chunking over
the batch bounds that memory. Backward is written out (no autograd inside an op) and
recomputes each chunk.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mimo_fast.ops.mpnn_message_sum import PairGrads

#: activations per chunk (elements of a (b, N, N, max(H1, H2, Fo)) buffer): ~256 MiB in fp32
CHUNK_ELEMENTS = 1 << 26


def _pair_mask(mask: Optional[Tensor], B: int, N: int, device) -> Tensor:
    """valid[b, n, j]: j sends to n (j != n, both unmasked)."""
    valid = ~torch.eye(N, dtype=torch.bool, device=device).expand(B, N, N)
    if mask is not None:
        valid = valid & mask[:, None, :] & mask[:, :, None]
    return valid


def _pairs(recv, send, edge, we, w2, b2):
    """p1, h1, p2, h2 for every pair (n, j) of a chunk: (b, N, N, H)."""
    p1 = recv[:, :, None, :] + send[:, None, :, :] + edge @ we.T
    h1 = torch.relu(p1)
    p2 = h1 @ w2.T + b2
    return p1, h1, p2, torch.relu(p2)


def _chunk(B: int, N: int, *widths: int) -> int:
    per = max(1, N * N * max(widths))
    return max(1, min(B, CHUNK_ELEMENTS // per))


def forward(recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool) -> Tensor:
    B, N, H1 = recv.shape
    outs = []
    step = _chunk(B, N, H1, w2.shape[0], w3.shape[0])
    for i in range(0, B, step):
        sl = slice(i, i + step)
        valid = _pair_mask(None if mask is None else mask[sl], recv[sl].shape[0], N, recv.device)
        h2 = _pairs(recv[sl], send[sl], edge[sl], we, w2, b2)[3]
        msg = torch.relu(h2 @ w3.T + b3) if relu_out else h2
        outs.append(torch.einsum("bnjh,bnj->bnh", msg, valid.to(msg.dtype)))
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def backward(gin, recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool) -> PairGrads:
    """The chain rule through the pair layers, chunk by chunk (valid = pair mask):

        "relu": go3[n, j] = valid gin[n] (p3 > 0);  gW3 = sum go3 h2^T;  gb3 = sum go3
                gp2 = (go3 W3) (p2 > 0)
        "none": gp2[n, j] = valid gin[n] (p2 > 0);  s[n] = sum_j valid h2
        gW2 = sum gp2 h1^T;  gb2 = sum gp2;  gp1 = (gp2 W2) (p1 > 0)
        gedge = gp1 We;  gWe = sum gp1 edge^T;  grecv[n] = sum_j gp1;  gsend[j] = sum_n gp1
    """
    B, N, H1 = recv.shape
    H2, E = w2.shape[0], edge.shape[-1]
    z = recv.new_zeros
    grecv, gsend, gedge = z(B, N, H1), z(B, N, H1), z(B, N, N, E)
    gwe, gw2, gb2 = z(H1, E), z(H2, H1), z(H2)
    s = None if relu_out else z(B, N, H2)
    gw3, gb3 = (torch.zeros_like(w3), torch.zeros_like(b3)) if relu_out else (None, None)
    step = _chunk(B, N, H1, H2, w3.shape[0])
    for i in range(0, B, step):
        sl = slice(i, i + step)
        e = edge[sl]
        valid = _pair_mask(None if mask is None else mask[sl], e.shape[0], N, recv.device)[..., None]
        valid = valid.to(recv.dtype)
        p1, h1, p2, h2 = _pairs(recv[sl], send[sl], e, we, w2, b2)
        if relu_out:
            p3 = h2 @ w3.T + b3
            go3 = valid * gin[sl][:, :, None, :] * (p3 > 0).to(p3.dtype)
            gw3 += torch.einsum("bnjo,bnjh->oh", go3, h2)
            gb3 += go3.sum((0, 1, 2))
            gp2 = (go3 @ w3) * (p2 > 0).to(p2.dtype)
        else:
            gp2 = valid * gin[sl][:, :, None, :] * (p2 > 0).to(p2.dtype)
            s[sl] = (valid * h2).sum(2)
        gw2 += torch.einsum("bnjh,bnjk->hk", gp2, h1)
        gb2 += gp2.sum((0, 1, 2))
        gp1 = (gp2 @ w2) * (p1 > 0).to(p1.dtype)
        gedge[sl] = gp1 @ we
        gwe += torch.einsum("bnjh,bnje->he", gp1, e)
        grecv[sl], gsend[sl] = gp1.sum(2), gp1.sum(1)
    return PairGrads(grecv, gsend, gedge, gwe, gw2, gb2, s, gw3, gb3)
