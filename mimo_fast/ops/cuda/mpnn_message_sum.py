"""``cuda`` backend of :func:`mimo_fast.ops.mpnn_message_sum`: the pair kernels
(contract: :class:`mimo_fast.ops.mpnn_message_sum.PairKernels`), launch glue around
``csrc/mpnn_message_sum/cuda/`` (module ``mimo_fast._C_cuda``).

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
from mimo_fast.ops import native
from mimo_fast.ops import registry
from mimo_fast.ops.mpnn_message_sum import PairGrads

OP = "mpnn_message_sum"
_SIZES = "relu B N E H1 H2 Fo sm_count smem_block smem_sm stream"
FORWARD = native.Signature("mpnn_message_sum_forward", "recv send edge we w2 b2 w3 b3 mask:bool? >out",
                           _SIZES + " max_grid", device="cuda")
BACKWARD = native.Signature(
    "mpnn_message_sum_backward",
    "gin recv send edge we w2 b2 w3 b3 mask:bool? >s? >grecv >gsend_part >gsend? >gedge >part_w2 >part_b2 >part_we "
    ">part_w3? >part_b3? >gw2 >gb2 >gwe >gw3? >gb3?", _SIZES, device="cuda")
#: blocks per forward launch: CUDA's grid limit (tests pass a small one to force chunked launches)
MAX_GRID = 2**31 - 1


@functools.lru_cache(maxsize=None)
def device_limits(index: int) -> tuple[int, int, int]:
    """(SM count, opt-in shared memory per block, shared memory per SM) of a CUDA device."""
    return tuple(_ext.C_CUDA.mpnn_message_sum_device_limits(index))


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
    return _launch_config((B, N, E, H1, H2, Fo), native.dtype_code(dtype), bool(relu), device_limits(device_index))


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
    """(context making t's device current, torch's current stream there as an integer, the
    device the marshaller checks tensors against): the kernels run on the caller's stream,
    ordered with its other work. The emulation tests replace it (CPU tensors, stream 0)."""
    return torch.cuda.device(t.device), torch.cuda.current_stream(t.device).cuda_stream, None


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
    return sizes, cfg, (r, s, edge, we, w2, b2, w3, b3)


def forward(recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool, *, max_grid: int = MAX_GRID):
    B, N, _ = recv.shape
    out = recv.new_empty(B, N, w3.shape[0] if relu_out else w2.shape[0])
    if B == 0:
        return out
    sizes, cfg, ts = _prep(recv, send, edge, we, w2, b2, w3, b3, relu_out)
    ctx, stream, device = _launch_context(recv)
    with ctx:
        FORWARD.call(_ext.C_CUDA.mpnn_message_sum_forward, *ts, mask, out, bool(relu_out), *sizes,
                     *device_limits(_index(recv)), stream, max_grid, device=device)
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
    ctx, stream, device = _launch_context(recv)
    with ctx:
        BACKWARD.call(_ext.C_CUDA.mpnn_message_sum_backward, gin, *ts, mask, s, grecv, gsend_part,
                      gsend if G > 1 else None, gedge, part_w2, part_b2, part_we, part_w3, part_b3, gw2, gb2, gwe,
                      gw3, gb3, bool(relu_out), *sizes, *device_limits(_index(recv)), stream, device=device)
    return PairGrads(grecv, gsend, gedge, gwe, gw2, gb2, s, gw3, gb3)


registry.get_backend("cuda").implement(OP, forward, backward, refuse=refuse)
