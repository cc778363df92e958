"""``cuda`` backend of :func:`mimo_fast.ops.mpnn_message_sum`: the pair kernels
(contract: :class:`mimo_fast.ops.mpnn_message_sum.PairKernels`), launch glue around
``csrc/mpnn_message_sum/*.cu`` (module ``mimo_fast._C_cuda``).

The op module makes ``recv = node Wa^T + b1`` and ``send = node Wb^T`` and does the per-node
layers; here everything per pair runs in CUDA, IEEE float32/float64 throughout (no TF32):

* forward, one launch: the fused pair kernel streams over the senders, two layers per pair
  (GEMM1 in registers) and sums over senders: ``s = sum_j h2`` (``out_act="none"``) or, with
  W3 per pair in the kernel (GEMM3 on shared-memory tiles), ``out = sum_j relu(W3 h2 + b3)``
  (``"relu"``).
* backward: the pair kernel recomputes the activations and writes ``grecv``, ``gsend``,
  ``gedge`` (and ``s`` for ``"none"``) plus per-block partials of gW2, gb2, gWe (and gW3,
  gb3 for ``"relu"``), summed in block order by a reduction kernel: no float atomics, the
  same inputs give the same bits.

The launch geometry is a pure function of the sizes, the out_act form and the device's limits
(``_C_cuda.mpnn_message_sum_launch_config``); ``refuse`` reports what it cannot serve.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as Fn

from mimo_fast import _ext
from mimo_fast.ops.backends import CUDA
from mimo_fast.ops.mpnn_message_sum import PairGrads

OP = "mpnn_message_sum"


@functools.lru_cache(maxsize=None)
def device_limits(index: int) -> tuple[int, int, int]:
    """(SM count, opt-in shared memory per block, shared memory per SM) of a CUDA device."""
    return tuple(_ext.C_CUDA.mpnn_message_sum_device_limits(index))


def _dtype_code(dtype: torch.dtype) -> int:
    return _ext.DTYPE_CODES[str(dtype).removeprefix("torch.")]


def _index(t: torch.Tensor) -> int:
    return t.device.index or 0


@functools.lru_cache(maxsize=256)
def _launch_config(sizes: tuple, code: int, relu: bool, limits: tuple) -> dict:
    return _ext.C_CUDA.mpnn_message_sum_launch_config(*sizes, code, relu, *limits)


def launch_config(B: int, N: int, E: int, H1: int, H2: int, Fo: int, dtype: torch.dtype, relu: bool,
                  device_index: int = 0) -> dict:
    """Launch geometry for these sizes and out_act form (``relu``) on a device (see the C++
    make_config); cached, so dispatch's refusal check and the launch share one computation.
    Read-only."""
    return _launch_config((B, N, E, H1, H2, Fo), _dtype_code(dtype), bool(relu), device_limits(device_index))


def refuse(node, edge, w1, b1, w2, b2, w3, b3) -> Optional[str]:
    """Why these sizes cannot run here (hidden widths past 256, shared memory), or None.
    Dispatch does not pass out_act, so sizes one of the two forms cannot serve are refused
    for both (the message says which form)."""
    sizes = (node.shape[0], node.shape[1], edge.shape[-1], w1.shape[0], w2.shape[0], w3.shape[0])
    for relu in (False, True):
        reason = launch_config(*sizes, node.dtype, relu, _index(node))["refusal"]
        if reason:
            return reason
    return None


def _launch_context(t: torch.Tensor):
    """(context making t's device current, torch's current stream there as an integer):
    the kernels run on the caller's stream, ordered with its other work."""
    return torch.cuda.device(t.device), torch.cuda.current_stream(t.device).cuda_stream


def _mask_ptr(mask) -> tuple[Optional[torch.Tensor], int]:
    if mask is None:
        return None, 0
    m = mask.contiguous()
    return m, m.data_ptr()  # torch.bool is one byte, 0 or 1: read as uint8


def _rows(x: torch.Tensor, H1P: int) -> torch.Tensor:
    """recv / send as the kernels read them: (B*N, H1P) rows, zero past H1, 16-byte aligned
    (a copy only when H1 is not already a power of two >= 16)."""
    H1 = x.shape[-1]
    if H1 == H1P and x.is_contiguous() and x.data_ptr() % 16 == 0:
        return x
    return Fn.pad(x, (0, H1P - H1)).contiguous()


def _prep(recv, send, edge, we, w2, b2, w3, b3, relu_out):
    B, N, H1 = recv.shape
    sizes = (B, N, edge.shape[-1], H1, w2.shape[0], w3.shape[0])
    cfg = launch_config(*sizes, recv.dtype, relu_out, _index(recv))
    if cfg["refusal"]:
        raise ValueError(f"{OP} (cuda): {cfg['refusal']}")
    r, s = _rows(recv, cfg["H1P"]), _rows(send, cfg["H1P"])
    rest = tuple(t.contiguous() for t in (edge, we, w2, b2, w3, b3))
    return sizes, cfg, (r, s, *rest)


def forward(recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool):
    B, N, _ = recv.shape
    out = recv.new_empty(B, N, w3.shape[0] if relu_out else w2.shape[0])
    if B == 0:
        return out
    sizes, cfg, ts = _prep(recv, send, edge, we, w2, b2, w3, b3, relu_out)
    m, m_ptr = _mask_ptr(mask)
    ctx, stream = _launch_context(recv)
    with ctx:
        _ext.C_CUDA.mpnn_message_sum_forward(
            _dtype_code(recv.dtype), bool(relu_out), *(t.data_ptr() for t in ts), m_ptr, out.data_ptr(), *sizes,
            *device_limits(_index(recv)), stream)
    return out


def backward(gin, recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool) -> PairGrads:
    B, N, H1 = recv.shape
    H2, Fo, E = w2.shape[0], w3.shape[0], edge.shape[-1]
    if B == 0:
        z = recv.new_zeros
        return PairGrads(z(B, N, H1), z(B, N, H1), z(B, N, N, E), z(H1, E), z(H2, H1), z(H2),
                         None if relu_out else z(B, N, H2), z(Fo, H2) if relu_out else None,
                         z(Fo) if relu_out else None)
    sizes, cfg, ts = _prep(recv, send, edge, we, w2, b2, w3, b3, relu_out)
    bw = cfg["bwd"]
    P, G = bw["blocks"], bw["G"]
    H1P, H2P, FoP = cfg["H1P"], cfg["H2P"], cfg["FoP"]
    g = gin.contiguous()
    m, m_ptr = _mask_ptr(mask)
    new = recv.new_empty
    s = None if relu_out else new(B, N, H2)
    grecv, gsend_part = new(B, N, H1), new(G, B, N, H1)
    gsend = new(B, N, H1) if G > 1 else gsend_part[0]
    gedge = new(B, N, N, E)
    part_w2, part_b2, part_we = new(P * bw["S"], H2P, H1P), new(P, H2), new(P, H1, E)
    gw2, gb2, gwe = new(H2, H1), new(H2), new(H1, E)
    gw3 = gb3 = part_w3 = part_b3 = None
    if relu_out:
        part_w3, part_b3, gw3, gb3 = new(P * bw["S3"], FoP, H2P), new(P, Fo), new(Fo, H2), new(Fo)

    def ptr(t):
        return 0 if t is None else t.data_ptr()
    ctx, stream = _launch_context(recv)
    with ctx:
        _ext.C_CUDA.mpnn_message_sum_backward(
            _dtype_code(recv.dtype), bool(relu_out), g.data_ptr(), *(t.data_ptr() for t in ts), m_ptr, ptr(s),
            grecv.data_ptr(), gsend_part.data_ptr(), gsend.data_ptr() if G > 1 else 0, gedge.data_ptr(),
            part_w2.data_ptr(), part_b2.data_ptr(), part_we.data_ptr(), ptr(part_w3), ptr(part_b3),
            gw2.data_ptr(), gb2.data_ptr(), gwe.data_ptr(), ptr(gw3), ptr(gb3), *sizes,
            *device_limits(_index(recv)), stream)
    return PairGrads(grecv, gsend, gedge, gwe, gw2, gb2, s, gw3, gb3)


CUDA.implement(OP, forward, backward, refuse=refuse)
