"""Reference (pure PyTorch) mpnn_message_sum: the formula of
:func:`mimo_fast.ops.mpnn_message_sum`, written for clarity first.

It already splits the first layer (receiver, sender and edge projections) and sums
before the last layer, but it does hold ``(b, N, N, H)`` activations for a chunk of
``b`` batch elements; chunking over the batch bounds that memory. Backward is written
out (no autograd inside an op) and recomputes each chunk.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

#: activations per chunk (elements of a (b, N, N, max(H1, H2)) buffer): ~256 MiB in fp32
CHUNK_ELEMENTS = 1 << 26


def _pair_mask(mask: Optional[Tensor], B: int, N: int, device) -> Tensor:
    """valid[b, n, j]: j sends to n (j != n, j unmasked)."""
    valid = ~torch.eye(N, dtype=torch.bool, device=device).expand(B, N, N)
    if mask is not None:
        valid = valid & mask[:, None, :]
    return valid


def _chunk_forward(node, edge, w1, b1, w2, b2, mask, keep):
    """Shared by forward and backward; returns the activations backward needs."""
    B, N, F = node.shape
    recv = node @ w1[:, :F].T + b1                      # (B, N, H1): receiver n's share
    send = node @ w1[:, F:2 * F].T                      # (B, N, H1): sender j's share
    p1 = recv[:, :, None, :] + send[:, None, :, :] + edge @ w1[:, 2 * F:].T
    h1 = torch.relu(p1)
    p2 = h1 @ w2.T + b2
    h2 = torch.relu(p2)                                 # (B, N, N, H2)
    valid = _pair_mask(mask, B, N, node.device).to(node.dtype)
    s = torch.einsum("bnjh,bnj->bnh", h2, valid)        # sum over senders before layer 3
    count = valid.sum(-1, keepdim=True)                 # b3 is added once per message
    return (s, count, valid, p1, h1, p2) if keep else (s, count)


def forward_chunk(node, edge, w1, b1, w2, b2, w3, b3, mask):
    s, count = _chunk_forward(node, edge, w1, b1, w2, b2, mask, keep=False)
    out = s @ w3.T + count * b3
    if mask is not None:
        out = out * mask[:, :, None].to(out.dtype)
    return out


def _chunk(B: int, N: int, w1: Tensor, w2: Tensor) -> int:
    per = max(1, N * N * max(w1.shape[0], w2.shape[0]))
    return max(1, min(B, CHUNK_ELEMENTS // per))


def forward(node, edge, w1, b1, w2, b2, w3, b3, mask):
    B, N, _ = node.shape
    if B == 0:
        return node.new_zeros(0, N, w3.shape[0])
    step = _chunk(B, N, w1, w2)
    outs = [forward_chunk(node[i:i + step], edge[i:i + step], w1, b1, w2, b2, w3, b3,
                          None if mask is None else mask[i:i + step]) for i in range(0, B, step)]
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def backward(grad, node, edge, w1, b1, w2, b2, w3, b3, mask):
    """Gradients for (node, edge, w1, b1, w2, b2, w3, b3), written out (the chain rule
    through the forward above, chunk by chunk, recomputing the activations):

        g = grad * m_n;  gW3 = sum g s^T;  gb3 = sum count g;  gs = g W3
        gp2[n, j] = valid[n, j] gs[n] * (p2 > 0);  gW2 = sum gp2 h1^T;  gb2 = sum gp2
        gp1 = (gp2 W2) * (p1 > 0);  gedge = gp1 We;  gWe = sum gp1 edge^T
        grecv[n] = sum_j gp1[n, j];  gsend[j] = sum_n gp1[n, j];  gb1 = sum grecv
        gnode = grecv Wa + gsend Wb;  gWa = sum grecv node^T;  gWb = sum gsend node^T
    """
    B, N, F = node.shape
    gw1, gb1, gw2, gb2, gw3, gb3 = (torch.zeros_like(w) for w in (w1, b1, w2, b2, w3, b3))
    gnode, gedge = torch.zeros_like(node), torch.zeros_like(edge)
    step = _chunk(max(B, 1), N, w1, w2)
    for i in range(0, B, step):
        sl = slice(i, i + step)
        x, e, m = node[sl], edge[sl], None if mask is None else mask[sl]
        s, count, valid, p1, h1, p2 = _chunk_forward(x, e, w1, b1, w2, b2, m, keep=True)
        g = grad[sl] if m is None else grad[sl] * m[:, :, None].to(grad.dtype)
        gw3 += torch.einsum("bno,bnh->oh", g, s)
        gb3 += (g * count).sum((0, 1))
        gs = g @ w3
        gp2 = (p2 > 0).to(g.dtype) * (valid[..., None] * gs[:, :, None, :])
        gw2 += torch.einsum("bnjh,bnjk->hk", gp2, h1)
        gb2 += gp2.sum((0, 1, 2))
        gp1 = (gp2 @ w2) * (p1 > 0).to(g.dtype)
        gedge[sl] = gp1 @ w1[:, 2 * F:]
        gw1[:, 2 * F:] += torch.einsum("bnjh,bnje->he", gp1, e)
        grecv, gsend = gp1.sum(2), gp1.sum(1)
        gb1 += grecv.sum((0, 1))
        gw1[:, :F] += torch.einsum("bnh,bnf->hf", grecv, x)
        gw1[:, F:2 * F] += torch.einsum("bnh,bnf->hf", gsend, x)
        gnode[sl] = grecv @ w1[:, :F] + gsend @ w1[:, F:2 * F]
    return [gnode, gedge, gw1, gb1, gw2, gb2, gw3, gb3]
