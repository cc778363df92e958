"""``cuda`` backend of :func:`mimo_fast.ops.mpnn_message_sum` (formula in that docstring):
launch glue around ``csrc/mpnn_message_sum/*.cu`` (module ``mimo_fast._C_cuda``).

* forward: two launches, everything in CUDA: the per-node projections
  ``recv = node Wa^T + b1``, ``send = node Wb^T`` (``w1 = [Wa | Wb | We]``), then the fused
  pair kernel (stream over senders, two layers per pair, sum before the last layer, W3
  epilogue). IEEE float32/float64 throughout (no TF32).
* backward: the projections again, the pair kernel (recomputes the activations; writes
  ``s``, ``grecv``, ``gsend``, ``gedge`` and per-block partials of gW2, gb2, gWe, summed in
  block order by a reduction kernel: no float atomics), then torch finishes the per-node
  part with small GEMMs: ``gnode = grecv Wa + gsend Wb``, ``gWa = grecv^T node``,
  ``gWb = gsend^T node``, ``gb1 = sum grecv``, ``gW3 = (grad*mask)^T s``,
  ``gb3 = sum count (grad*mask)``. Those follow torch's matmul precision setting (IEEE
  float32 unless the caller enabled TF32, as for the reference backend).

The launch geometry is a pure function of the sizes and the device's limits
(``_C_cuda.mpnn_message_sum_launch_config``); ``refuse`` reports what it cannot serve.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from mimo_fast import _ext
from mimo_fast.ops.backends import CUDA

OP = "mpnn_message_sum"


@functools.lru_cache(maxsize=None)
def device_limits(index: int) -> tuple[int, int, int]:
    """(SM count, opt-in shared memory per block, shared memory per SM) of a CUDA device."""
    return tuple(_ext.C_CUDA.mpnn_message_sum_device_limits(index))


def _sizes(node, edge, w1, w2, w3):
    B, N, F = node.shape
    return B, N, F, edge.shape[-1], w1.shape[0], w2.shape[0], w3.shape[0]


def _dtype_code(t: torch.Tensor) -> int:
    return _ext.DTYPE_CODES[str(t.dtype).removeprefix("torch.")]


def launch_config(node, edge, w1, w2, w3) -> dict:
    """Launch geometry for these inputs on their device (see the C++ make_config)."""
    return _ext.C_CUDA.mpnn_message_sum_launch_config(
        *_sizes(node, edge, w1, w2, w3), _dtype_code(node), *device_limits(node.device.index or 0))


def refuse(node, edge, w1, b1, w2, b2, w3, b3) -> Optional[str]:
    """Why these sizes cannot run here (hidden widths past 256, shared memory), or None."""
    return launch_config(node, edge, w1, w2, w3)["refusal"] or None


def _launch_context(t: torch.Tensor):
    """(context making t's device current, torch's current stream there as an integer):
    the kernels run on the caller's stream, ordered with its other work."""
    return torch.cuda.device(t.device), torch.cuda.current_stream(t.device).cuda_stream


def _mask_ptr(mask) -> tuple[Optional[torch.Tensor], int]:
    if mask is None:
        return None, 0
    m = mask.contiguous()
    return m, m.data_ptr()  # torch.bool is one byte, 0 or 1: read as uint8


def forward(node, edge, w1, b1, w2, b2, w3, b3, mask):
    B, N, F, E, H1, H2, Fo = _sizes(node, edge, w1, w2, w3)
    out = node.new_empty(B, N, Fo)
    if B == 0:
        return out
    cfg = launch_config(node, edge, w1, w2, w3)
    x, e, a1, c1, a2, c2, a3, c3 = (t.contiguous() for t in (node, edge, w1, b1, w2, b2, w3, b3))
    m, m_ptr = _mask_ptr(mask)
    recv = node.new_empty(B * N, cfg["H1P"])
    send = node.new_empty(B * N, cfg["H1P"])
    ctx, stream = _launch_context(node)
    with ctx:
        _ext.C_CUDA.mpnn_message_sum_forward(
            _dtype_code(node), x.data_ptr(), e.data_ptr(), a1.data_ptr(), c1.data_ptr(), a2.data_ptr(),
            c2.data_ptr(), a3.data_ptr(), c3.data_ptr(), m_ptr, out.data_ptr(), recv.data_ptr(),
            send.data_ptr(), B, N, F, E, H1, H2, Fo, *device_limits(node.device.index or 0), stream)
    return out


def backward(grad, node, edge, w1, b1, w2, b2, w3, b3, mask):
    B, N, F, E, H1, H2, Fo = _sizes(node, edge, w1, w2, w3)
    if B == 0:
        return [torch.zeros_like(t) for t in (node, edge, w1, b1, w2, b2, w3, b3)]
    cfg = launch_config(node, edge, w1, w2, w3)
    H1P, H2P, bw = cfg["H1P"], cfg["H2P"], cfg["bwd"]
    P, G = bw["blocks"], bw["G"]
    x, e, a1, c1, a2, c2, a3, c3 = (t.contiguous() for t in (node, edge, w1, b1, w2, b2, w3, b3))
    g = grad.contiguous()
    m, m_ptr = _mask_ptr(mask)
    new = node.new_empty
    recv, send = new(B * N, H1P), new(B * N, H1P)
    s, grecv, gsend_part = new(B * N, H2P), new(B * N, H1P), new(G, B * N, H1P)
    gsend = new(B * N, H1) if G > 1 else gsend_part[0, :, :H1]
    gedge = new(B, N, N, E)
    part_w2, part_b2, part_we = new(P * bw["S"], H2P, H1P), new(P, H2), new(P, H1, E)
    gw2, gb2, gwe = new(H2, H1), new(H2), new(H1, E)
    ctx, stream = _launch_context(node)
    with ctx:
        _ext.C_CUDA.mpnn_message_sum_backward(
            _dtype_code(node), g.data_ptr(), x.data_ptr(), e.data_ptr(), a1.data_ptr(), c1.data_ptr(),
            a2.data_ptr(), c2.data_ptr(), a3.data_ptr(), m_ptr, recv.data_ptr(), send.data_ptr(), s.data_ptr(),
            grecv.data_ptr(), gsend_part.data_ptr(), gsend.data_ptr() if G > 1 else 0, gedge.data_ptr(),
            part_w2.data_ptr(), part_b2.data_ptr(), part_we.data_ptr(), gw2.data_ptr(), gb2.data_ptr(),
            gwe.data_ptr(), B, N, F, E, H1, H2, Fo, *device_limits(node.device.index or 0), stream)
    # per-node part (small GEMMs), reference backward's last lines
    grecv, s = grecv[:, :H1], s[:, :H2]
    x2 = x.reshape(B * N, F)
    gm = g if mask is None else g * mask[:, :, None].to(g.dtype)
    g2 = gm.reshape(B * N, Fo)
    gnode = torch.mm(grecv, w1[:, :F]).addmm_(gsend, w1[:, F:2 * F]).reshape(B, N, F)
    gw1 = torch.cat([grecv.T @ x2, gsend.T @ x2, gwe], dim=1)
    gb1 = grecv.sum(0)
    gw3 = g2.T @ s
    if mask is None:
        gb3 = g2.sum(0) * float(N - 1)
    else:
        mk = mask.to(g.dtype)
        count = (mk * (mk.sum(-1, keepdim=True) - 1))[..., None]  # valid senders per receiver
        gb3 = (gm * count).sum((0, 1))
    return [gnode, gedge, gw1, gb1, gw2, gb2, gw3, gb3]


CUDA.implement(OP, forward, backward, refuse=refuse)
