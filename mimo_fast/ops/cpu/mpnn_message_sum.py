"""``cpu`` backend of :func:`mimo_fast.ops.mpnn_message_sum` (formula in that docstring).

Split of the work (the design's "split w1, stream over j, sum before the last layer"):

* forward, all in C++ (``csrc/mpnn_message_sum/``), one parallel region: per batch
  element ``recv = node Wa^T + b1``, ``send = node Wb^T`` (``w1 = [Wa | Wb | We]``), then
  per pair, streamed tile by tile,
  ``s[n] = sum_{j valid} relu(W2 relu(recv[n] + send[j] + We e[n, j]) + b2)``, then
  ``out[n] = W3 s[n] + count[n] b3``.
* backward: torch makes recv/send and ``gs = (grad * mask) W3``; C++ recomputes each
  tile and accumulates the chain rule written in
  :func:`mimo_fast.ops.reference.mpnn_message_sum.backward`, returning per-node sums
  (grecv, gsend) and per-thread weight gradients; torch finishes with small GEMMs.

Hidden sizes are zero-padded to the kernel's vector width (``_C.mpnn_message_sum_pad``):
zero rows of w1/b1 give h1 = 0 in the pad, zero rows of w2/b2 give p2 = 0, so the pad
never reaches the result. ``MIMO_FAST_CPU_ISA=portable|avx2|avx512`` forces a code path
(default ``auto``: the best this CPU runs: avx512, else avx2, else portable; avx2 over
avx512 when padding to 16 floats would inflate small hidden layers, see
``_C.mpnn_message_sum_choose_isa``), for testing each path; forcing one this CPU lacks
raises ValueError.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as Fn

from mimo_fast import _ext
from mimo_fast.ops.backends import CPU
from mimo_fast.ops.threads import num_threads

OP = "mpnn_message_sum"
ISA_ENV = "MIMO_FAST_CPU_ISA"
_ISA_CODES = {"": 0, "auto": 0, "portable": 1, "avx2": 2, "avx512": 3}


def isa_code() -> int:
    value = os.environ.get(ISA_ENV, "").strip().lower()
    if value not in _ISA_CODES:
        raise ValueError(f"{ISA_ENV}={value!r}: expected one of auto, portable, avx2, avx512")
    return _ISA_CODES[value]


def _round(x: int, m: int) -> int:
    return (x + m - 1) // m * m


class _Prep:
    """Contiguous, padded operands shared by forward and backward."""

    def __init__(self, node, edge, w1, b1, w2, b2, mask):
        C = _ext.C
        self.code = _ext.DTYPE_CODES[str(node.dtype).removeprefix("torch.")]
        B, N, F = node.shape
        E, H1, H2 = edge.shape[-1], w1.shape[0], w2.shape[0]
        # auto -> a concrete ISA for these sizes (avx512 unless its wider pad costs more)
        self.isa = C.mpnn_message_sum_choose_isa(self.code, isa_code(), H1, H2)
        m = C.mpnn_message_sum_pad(self.code, self.isa)
        H1p, H2p = _round(H1, m), _round(H2, m)
        self.B, self.N, self.F, self.E, self.H1, self.H2, self.H1p, self.H2p = B, N, F, E, H1, H2, H1p, H2p
        self.node = node.contiguous()
        self.x = self.node.reshape(B * N, F)
        self.waT = Fn.pad(w1[:, :F].T, (0, H1p - H1)).contiguous()               # (F, H1p)
        self.wbT = Fn.pad(w1[:, F:2 * F].T, (0, H1p - H1)).contiguous()          # (F, H1p)
        self.b1 = Fn.pad(b1, (0, H1p - H1)).contiguous()
        self.weT = Fn.pad(w1[:, 2 * F:].T, (0, H1p - H1)).contiguous()          # (E, H1p)
        self.w2 = Fn.pad(w2, (0, H1p - H1, 0, H2p - H2)).contiguous()            # (H2p, H1p)
        self.w2t = self.w2.T.contiguous()                                         # (H1p, H2p)
        self.b2 = Fn.pad(b2, (0, H2p - H2)).contiguous()
        self.edge = edge.contiguous()
        self.mask = None if mask is None else mask.contiguous().view(torch.uint8)
        self.mask_ptr = 0 if mask is None else self.mask.data_ptr()
        self.nthreads = num_threads()

    def count(self, mask, dtype):
        """(B, N, 1) messages each receiver sums (0 for masked receivers), or a scalar."""
        if mask is None:
            return float(self.N - 1)
        m = mask.to(dtype)
        return ((m.sum(-1, keepdim=True) - 1) * m)[..., None]


def forward(node, edge, w1, b1, w2, b2, w3, b3, mask):
    B, N, _ = node.shape
    Fo = w3.shape[0]
    if B == 0:
        return node.new_zeros(0, N, Fo)
    p = _Prep(node, edge, w1, b1, w2, b2, mask)
    w3p = Fn.pad(w3, (0, p.H2p - p.H2)).contiguous()
    b3c = b3.contiguous()
    out = node.new_empty(B, N, Fo)
    _ext.C.mpnn_message_sum_forward(
        p.code, p.node.data_ptr(), p.edge.data_ptr(), p.waT.data_ptr(), p.wbT.data_ptr(),
        p.b1.data_ptr(), p.weT.data_ptr(), p.w2t.data_ptr(), p.b2.data_ptr(), w3p.data_ptr(),
        b3c.data_ptr(), p.mask_ptr, out.data_ptr(), B, N, p.F, p.E, p.H1p, p.H2p, Fo,
        p.nthreads, p.isa)
    return out


def backward(grad, node, edge, w1, b1, w2, b2, w3, b3, mask):
    B, N, F = node.shape
    if B == 0:
        return [torch.zeros_like(t) for t in (node, edge, w1, b1, w2, b2, w3, b3)]
    p = _Prep(node, edge, w1, b1, w2, b2, mask)
    H1, H2, H1p, H2p, E, T = p.H1, p.H2, p.H1p, p.H2p, p.E, p.nthreads
    Fo = w3.shape[0]
    recv = torch.addmm(p.b1, p.x, p.waT).contiguous()                          # (B*N, H1p)
    send = torch.mm(p.x, p.wbT).contiguous()
    g = grad if mask is None else grad * mask[:, :, None].to(grad.dtype)
    g2 = g.reshape(B * N, Fo)
    gs = torch.mm(g2, Fn.pad(w3, (0, H2p - H2))).contiguous()                   # (B*N, H2p)
    per_thread = T > 1 and B < 2 * T
    z = node.new_zeros
    s, grecv = z(B * N, H2p), z(B * N, H1p)
    gsend = z(T if per_thread else 1, B * N, H1p)
    gedge = torch.zeros_like(p.edge)
    gw2, gb2, gwe = z(T, H2p, H1p), z(T, H2p), z(T, E, H1p)
    _ext.C.mpnn_message_sum_backward(
        p.code, recv.data_ptr(), send.data_ptr(), p.edge.data_ptr(), p.weT.data_ptr(),
        p.w2t.data_ptr(), p.w2.data_ptr(), p.b2.data_ptr(), p.mask_ptr, gs.data_ptr(),
        s.data_ptr(), grecv.data_ptr(), gsend.data_ptr(), per_thread, gedge.data_ptr(),
        gw2.data_ptr(), gb2.data_ptr(), gwe.data_ptr(), B, N, E, H1p, H2p, T, p.isa)
    gsend = gsend.sum(0) if per_thread else gsend[0]
    grecv, gsend = grecv[:, :H1], gsend[:, :H1]
    gw3 = torch.mm(g2.T, s[:, :H2])
    count = p.count(mask, node.dtype)
    gb3 = g2.sum(0) * count if mask is None else (g * count).sum((0, 1))
    gnode = torch.mm(grecv, w1[:, :F]).addmm_(gsend, w1[:, F:2 * F]).reshape(B, N, F)
    gw1 = torch.cat([grecv.T @ p.x, gsend.T @ p.x, gwe.sum(0)[:, :H1].T], dim=1)
    return [gnode, gedge, gw1, grecv.sum(0), gw2.sum(0)[:H2, :H1].contiguous(),
            gb2.sum(0)[:H2].contiguous(), gw3, gb3]


CPU.implement(OP, forward, backward)
