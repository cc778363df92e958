"""``cpu`` backend of :func:`mimo_fast.ops.mpnn_message_sum`: the two pair kernels
(:class:`mimo_fast.ops.mpnn_message_sum.PairKernels`) as fused C++ (``csrc/mpnn_message_sum/cpu/``).

The op module makes ``recv``/``send`` (first-layer split) and does the per-node layers;
these kernels stream over the (receiver, sender) pairs tile by tile, never holding a
``B*N*N*H`` buffer:

* forward: ``h1 = relu(recv[n] + send[j] + We e[n, j])``, ``h2 = relu(W2 h1 + b2)``, and per
  receiver the sum over valid senders of ``h2`` (``relu_out`` False) or of
  ``relu(W3 h2 + b3)`` (True: the last layer runs per pair inside the kernel).
* backward: recomputes each tile and accumulates the chain rule written in
  :func:`mimo_fast.ops.reference.mpnn_message_sum.backward`; returns every
  :class:`~mimo_fast.ops.mpnn_message_sum.PairGrads` field, finished in C++.
  Bitwise deterministic, and the same for any thread count: the work split and the order
  of every sum depend only on the sizes (see mpnn_message_sum.cpp).

Weights are zero-padded here to the kernel's vector width (``_C.mpnn_message_sum_pad``):
zero rows of We give h1 = 0 in the H1 pad, zero rows of w2/b2 give h2 = 0 in the H2 pad,
zero rows of w3/b3 give 0 in the Fo pad, so the pad never reaches the result. recv, send,
gin and the outputs stay unpadded (the kernel pads rows in per-thread scratch).
``MIMO_FAST_CPU_ISA=portable|avx2|avx512`` forces a code path (default ``auto``: the best
this CPU runs: avx512, else avx2, else portable; avx2 over avx512 when padding to 16
floats would inflate small hidden layers, see ``_C.mpnn_message_sum_choose_isa``), for
testing each path; forcing one this CPU lacks raises ValueError.
"""
from __future__ import annotations

import os

import torch.nn.functional as Fn

from mimo_fast import _ext
from mimo_fast.ops import native
from mimo_fast.ops import registry
from mimo_fast.ops.mpnn_message_sum import PairGrads
from mimo_fast.ops.threads import num_threads

OP = "mpnn_message_sum"
_SIZES = "relu B N E H1 H2 Fo H1p H2p Fop nthreads isa"
FORWARD = native.Signature("mpnn_message_sum_forward", "recv send edge weT w2t b2 w3t? b3? mask:bool? >out", _SIZES)
BACKWARD = native.Signature(
    "mpnn_message_sum_backward",
    "gin recv send edge weT w2t w2 b2 w3t? w3? b3? mask:bool? >grecv >gsend >gedge >gwe >gw2 >gb2 >s? >gw3? >gb3?",
    _SIZES)
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
    """Sizes, code path and the padded weights shared by forward and backward (the other
    tensors go to the kernel as given: the marshaller makes inputs contiguous)."""

    def __init__(self, recv, edge, we, w2, b2, w3, b3, relu_out, backward=False):
        C = _ext.C
        self.code = native.dtype_code(recv.dtype)
        B, N, H1 = recv.shape
        E, H2, Fo = edge.shape[-1], w2.shape[0], w3.shape[0]
        # auto -> a concrete ISA for these sizes (avx512 unless its wider pad costs more)
        self.isa = C.mpnn_message_sum_choose_isa(self.code, isa_code(), H1, H2)
        m = C.mpnn_message_sum_pad(self.code, self.isa)
        H1p, H2p, Fop = _round(H1, m), _round(H2, m), _round(Fo, m)
        self.sizes = (B, N, E, H1, H2, Fo, H1p, H2p, Fop)
        self.weT = Fn.pad(we.T, (0, H1p - H1)).contiguous()                     # (E, H1p)
        w2p = Fn.pad(w2, (0, H1p - H1, 0, H2p - H2))                           # (H2p, H1p)
        self.w2t = w2p.T.contiguous()                                            # (H1p, H2p)
        self.w2 = w2p.contiguous() if backward else None
        self.b2 = Fn.pad(b2, (0, H2p - H2)).contiguous()
        self.w3t = self.w3 = self.b3 = None
        if relu_out:
            w3p = Fn.pad(w3, (0, H2p - H2, 0, Fop - Fo))                       # (Fop, H2p)
            self.w3t = w3p.T.contiguous()                                        # (H2p, Fop)
            self.w3 = w3p.contiguous() if backward else None
            self.b3 = Fn.pad(b3, (0, Fop - Fo)).contiguous()


def forward(recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool):
    p = _Prep(recv, edge, we, w2, b2, w3, b3, relu_out)
    B, N = recv.shape[:2]
    out = recv.new_empty(B, N, w3.shape[0] if relu_out else w2.shape[0])
    FORWARD.call(_ext.C.mpnn_message_sum_forward, recv, send, edge, p.weT, p.w2t, p.b2, p.w3t, p.b3, mask, out,
                 relu_out, *p.sizes, num_threads(), p.isa)
    return out


def backward(gin, recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool) -> PairGrads:
    p = _Prep(recv, edge, we, w2, b2, w3, b3, relu_out, backward=True)
    B, N, H1 = recv.shape
    E, H2, Fo = edge.shape[-1], w2.shape[0], w3.shape[0]
    e = recv.new_empty          # the kernel writes every element of every output
    grecv, gsend, gedge = e(B, N, H1), e(B, N, H1), e(B, N, N, E)
    gwe, gw2, gb2 = e(H1, E), e(H2, H1), e(H2)
    s = None if relu_out else e(B, N, H2)
    gw3, gb3 = (e(Fo, H2), e(Fo)) if relu_out else (None, None)
    BACKWARD.call(_ext.C.mpnn_message_sum_backward, gin, recv, send, edge, p.weT, p.w2t, p.w2, p.b2, p.w3t,
                  p.w3, p.b3, mask, grecv, gsend, gedge, gwe, gw2, gb2, s, gw3, gb3, relu_out, *p.sizes,
                  num_threads(), p.isa)
    return PairGrads(grecv, gsend, gedge, gwe, gw2, gb2, s, gw3, gb3)


registry.get_backend("cpu").implement(OP, forward, backward)
