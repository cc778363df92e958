"""``mimo_fast::mpnn_message_sum``: all-pairs message-and-sum of an MPNN layer.

    h2[b, n, j] = relu(w2 @ relu(w1 @ [node[b,n], node[b,j], edge[b,n,j]] + b1) + b2)
    out_act="none":  out[b, n] = mask[b, n] * sum_{j != n, mask[b, j]} (w3 @ h2[b, n, j] + b3)
    out_act="relu":  out[b, n] = mask[b, n] * sum_{j != n, mask[b, j]} relu(w3 @ h2[b, n, j] + b3)

The receiving node comes first in the concatenation (the message from j to n, AMP-GNN
paper eqs. 15-16); ``edge[b, n, j]`` is the edge attribute seen by n. ``"relu"`` is the
message MLP of the GEPNet and GNN-detector authors' code (a ReLU after the last layer
too, before the sum over senders); ``"none"`` the AMP-GNN paper's text.

This module owns everything the backends share: the first-layer split
``w1 = [Wa | Wb | We]`` into per-node projections ``recv = node Wa^T + b1`` and
``send = node Wb^T`` (GEMMs), the last layer on the sums for ``"none"``, and in
backward the chain rule back to ``node`` and ``w1`` and the assembly of every weight
gradient. A backend implements only the pair kernels (:class:`PairKernels`), which
stream over the senders and never hold a ``B*N*N*H`` buffer.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Protocol

import torch
from torch import Tensor

from mimo_fast.ops import eager
from mimo_fast.ops import registry
from mimo_fast.ops import validate as V

OP = "mpnn_message_sum"
OUT_ACTS = ("none", "relu")

#: Forms of this op whose GPU kernels passed the test suite on a real GPU, per backend ("" the
#: plain form): an NVIDIA H100 (torch 2.11 + CUDA 13, Triton 3.6), 2026-11-22, every op sample
#: on CUDA tensors, values, gradients, gradcheck (float64), opcheck and torch.compile --
#: bench/results/h100/gpu_h100_tests.md. The out_act="relu" form has not run on a GPU yet.
GPU_VALIDATED = {"triton": {""}}

#: Where the automatic choice prefers the reference to the validated Triton kernel, measured
#: on that H100 (bench/results/h100/gpu_h100.md; forward + backward, the training case):
#: H1 x H2 = 128 x 64 (S1) took 10.3 ms in Triton against 5.35 ms in the reference (the
#: backward's tiles spill registers at that width), while 64 x 32 (S3, 6.8 vs 17.3 ms) and
#: 16 x 8 (S2, 2.4 vs 4.7 ms) are faster in Triton. So Triton serves this op automatically
#: up to H1 * H2 = 2048 (the GEPNet and AMP-GNN sizes).
TRITON_AUTO_MAX_H1H2 = 2048


def _auto_refusal(backend: str, tensors: tuple) -> Optional[str]:
    if backend == "triton" and len(tensors) >= 5:
        h1, h2 = tensors[2].shape[0], tensors[4].shape[0]
        if h1 * h2 > TRITON_AUTO_MAX_H1H2:
            return (f"its {OP} kernel is slower than the reference in forward+backward at "
                    f"H1 x H2 = {h1} x {h2} > {TRITON_AUTO_MAX_H1H2} (measured on an H100), so it runs "
                    "there only when asked for by name (backend='triton')")
    return None


registry.declare_limits(OP, gpu_validated=GPU_VALIDATED, auto_refusal=_auto_refusal)


class PairGrads(NamedTuple):
    """What a backend's pair backward returns (all in the op's dtype and device).

    ``grecv[b, n] = sum_j gp1[b, n, j]`` and ``gsend[b, j] = sum_n gp1[b, n, j]`` (gradients
    of the loss with respect to ``recv`` and ``send``), ``gedge`` (zero at pairs that send
    nothing), ``gwe = sum gp1 edge^T`` (H1, E), ``gw2`` (H2, H1), ``gb2`` (H2). For
    ``out_act="none"`` also ``s`` (B, N, H2), the forward's per-receiver sums of h2 (for
    gW3); for ``"relu"`` the last layer's ``gw3`` (Fo, H2) and ``gb3`` (Fo) instead.
    """

    grecv: Tensor
    gsend: Tensor
    gedge: Tensor
    gwe: Tensor
    gw2: Tensor
    gb2: Tensor
    s: Optional[Tensor] = None
    gw3: Optional[Tensor] = None
    gb3: Optional[Tensor] = None


class PairKernels(Protocol):
    """The two functions a backend registers for this op (``Backend.implement``).

    Inputs: ``recv``, ``send`` ``(B, N, H1)`` contiguous (``b1`` is inside ``recv``);
    ``edge`` ``(B, N, N, E)`` as the caller gave it (may be non-contiguous); ``we`` =
    ``w1[:, 2F:]`` ``(H1, E)`` (a view); ``w2, b2, w3, b3`` as given; ``mask`` (B, N) bool or
    None; ``relu_out`` = ``out_act == "relu"``. Valid pairs: ``j != n``, both unmasked.

    * ``forward(recv, send, edge, we, w2, b2, w3, b3, mask, relu_out)``: with
      ``relu_out`` False, ``s[b, n] = sum_{valid j} h2[b, n, j]`` ``(B, N, H2)`` (w3, b3
      unused); with True, ``out[b, n] = sum_{valid j} relu(w3 h2[b, n, j] + b3)``
      ``(B, N, Fo)``. Rows of masked receivers are zero.
    * ``backward(gin, recv, send, edge, we, w2, b2, w3, b3, mask, relu_out) -> PairGrads``:
      ``gin`` is ``(grad * mask) @ w3`` ``(B, N, H2)`` for False (so
      ``gp2[n, j] = gin[n] * (p2 > 0)``), ``grad * mask`` ``(B, N, Fo)`` for True (so
      ``go3[n, j] = gin[n] * (p3 > 0)``, ``gp2 = (go3 w3) * (p2 > 0)``); both contiguous.
    """

    def forward(self, recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool) -> Tensor: ...

    def backward(self, gin, recv, send, edge, we, w2, b2, w3, b3, mask, relu_out: bool) -> PairGrads: ...


def check(node, edge, w1, b1, w2, b2, w3, b3, mask, out_act="none") -> None:
    """Metadata checks (run by the real and the fake implementation)."""
    if out_act not in OUT_ACTS:
        raise ValueError(f"{OP}: out_act must be one of {OUT_ACTS}, got {out_act!r}")
    for name, t in (("node", node), ("edge", edge), ("w1", w1), ("b1", b1), ("w2", w2),
                    ("b2", b2), ("w3", w3), ("b3", b3)):
        V.tensor(name, t, OP)
    V.dtype_in("node", node, V.REAL_DTYPES, OP)
    V.ndim("node", node, 3, OP, ("B", "N", "F"))
    B, N, F = node.shape
    V.positive_size("node", N, "node (N >= 1)", OP)
    V.positive_size("node", F, "feature (F >= 1)", OP)
    V.ndim("edge", edge, 4, OP, ("B", "N", "N", "E"))
    E = edge.shape[-1]
    V.shape("edge", edge, (B, N, N, E), OP, ("B", "N", "N", "E"))
    V.ndim("w1", w1, 2, OP, ("H1", "2F+E"))
    H1 = w1.shape[0]
    V.positive_size("w1", H1, "row (H1 >= 1)", OP)
    V.shape("w1", w1, (H1, 2 * F + E), OP, ("H1", "2F+E"))
    V.shape("b1", b1, (H1,), OP, ("H1",))
    V.ndim("w2", w2, 2, OP, ("H2", "H1"))
    H2 = w2.shape[0]
    V.positive_size("w2", H2, "row (H2 >= 1)", OP)
    V.shape("w2", w2, (H2, H1), OP, ("H2", "H1"))
    V.shape("b2", b2, (H2,), OP, ("H2",))
    V.ndim("w3", w3, 2, OP, ("Fo", "H2"))
    Fo = w3.shape[0]
    V.positive_size("w3", Fo, "row (Fo >= 1)", OP)
    V.shape("w3", w3, (Fo, H2), OP, ("Fo", "H2"))
    V.shape("b3", b3, (Fo,), OP, ("Fo",))
    for name, t in (("edge", edge), ("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2), ("w3", w3), ("b3", b3)):
        V.same_dtype(name, t, node.dtype, "node", OP)
        V.same_device(name, t, node, "node", OP)
    if mask is not None:
        V.tensor("mask", mask, OP)
        if mask.dtype != torch.bool:
            raise TypeError(f"{OP}: mask must have dtype torch.bool, got {mask.dtype}")
        V.shape("mask", mask, (B, N), OP, ("B", "N"))
        V.same_device("mask", mask, node, "node", OP)


def _check_values(node, edge, w1, b1, w2, b2, w3, b3) -> None:
    if V.value_checks_enabled():
        V.values(OP, [("node", node), ("edge", edge), ("w1", w1), ("b1", b1), ("w2", w2),
                      ("b2", b2), ("w3", w3), ("b3", b3)])


# ------------------------------------------------------------------ shared layers
def _project(node: Tensor, w1: Tensor, b1: Tensor):
    """First layer split (the part every backend shares): ``recv = node Wa^T + b1``,
    ``send = node Wb^T``, both ``(B, N, H1)`` contiguous, and ``we = w1[:, 2F:]``."""
    B, N, F = node.shape
    x = node.reshape(B * N, F)
    recv = torch.addmm(b1, x, w1[:, :F].T).reshape(B, N, -1)
    send = torch.mm(x, w1[:, F:2 * F].T).reshape(B, N, -1)
    return recv, send, w1[:, 2 * F:]


def _count(mask: Optional[Tensor], B: int, N: int, like: Tensor) -> Tensor:
    """(B, N, 1) messages each receiver sums: N - 1, or #unmasked - 1 (0 if masked)."""
    if mask is None:
        return like.new_full((B, N, 1), float(max(N - 1, 0)))
    m = mask.to(like.dtype)
    return (m * (m.sum(-1, keepdim=True) - 1))[..., None]


def _masked(grad: Tensor, mask: Optional[Tensor]) -> Tensor:
    return grad if mask is None else grad * mask[:, :, None].to(grad.dtype)


def forward(impl, node, edge, w1, b1, w2, b2, w3, b3, mask, out_act: str) -> Tensor:
    """The op's forward on one backend's pair kernels (``impl.forward``)."""
    B, N, _ = node.shape
    if B == 0:
        return node.new_zeros(0, N, w3.shape[0])
    recv, send, we = _project(node, w1, b1)
    if out_act == "relu":
        return impl.forward(recv, send, edge, we, w2, b2, w3, b3, mask, True)
    s = impl.forward(recv, send, edge, we, w2, b2, w3, b3, mask, False)
    # sum before the last layer: W3 once per receiver, b3 once per message
    return torch.mm(s.reshape(B * N, -1), w3.T).reshape(B, N, -1) + _count(mask, B, N, s) * b3


def backward(impl, grad, node, edge, w1, b1, w2, b2, w3, b3, mask, out_act: str) -> List[Tensor]:
    """Gradients for (node, edge, w1, b1, w2, b2, w3, b3): the pair kernels' sums
    (:class:`PairGrads`), then the chain rule through the shared layers:

        gnode = grecv Wa + gsend Wb;  gWa = sum grecv node^T;  gWb = sum gsend node^T
        gb1 = sum grecv;  gWe from the pair kernel
        "none": gW3 = sum g s^T,  gb3 = sum count g  (g = grad * mask)
    """
    B, N, F = node.shape
    if B == 0:
        return [torch.zeros_like(t) for t in (node, edge, w1, b1, w2, b2, w3, b3)]
    relu = out_act == "relu"
    g = _masked(grad, mask)
    recv, send, we = _project(node, w1, b1)
    gin = g.contiguous() if relu else torch.mm(g.reshape(B * N, -1), w3).reshape(B, N, -1)
    pg = impl.backward(gin, recv, send, edge, we, w2, b2, w3, b3, mask, relu)
    x = node.reshape(B * N, F)
    grecv, gsend = pg.grecv.reshape(B * N, -1), pg.gsend.reshape(B * N, -1)
    gnode = torch.mm(grecv, w1[:, :F]).addmm_(gsend, w1[:, F:2 * F]).reshape(B, N, F)
    gw1 = torch.cat([grecv.T @ x, gsend.T @ x, pg.gwe], dim=1)
    if relu:
        gw3, gb3 = pg.gw3, pg.gb3
    else:
        g2 = g.reshape(B * N, -1)
        gw3 = g2.T @ pg.s.reshape(B * N, -1)
        gb3 = (g * _count(mask, B, N, g)).sum((0, 1))
    return [gnode, pg.gedge, gw1, grecv.sum(0), pg.gw2, pg.gb2, gw3, gb3]


# ------------------------------------------------------------------ the custom op
def _impl(backend: str, tensors: tuple, out_act: str):
    # the relu form is its own variant for the backends' GPU-validation lists
    return registry.resolve(OP, backend, tensors, "" if out_act == "none" else out_act).ops[OP]


def _forward(node: Tensor, edge: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor,
             w3: Tensor, b3: Tensor, mask: Optional[Tensor], out_act: str, backend: str) -> Tensor:
    check(node, edge, w1, b1, w2, b2, w3, b3, mask, out_act)
    _check_values(node, edge, w1, b1, w2, b2, w3, b3)
    tensors = (node, edge, w1, b1, w2, b2, w3, b3)
    return forward(_impl(backend, tensors, out_act), *tensors, mask, out_act)


_op = torch.library.custom_op("mimo_fast::mpnn_message_sum", mutates_args=())(_forward)


@_op.register_fake
def _(node, edge, w1, b1, w2, b2, w3, b3, mask, out_act, backend):
    check(node, edge, w1, b1, w2, b2, w3, b3, mask, out_act)
    return node.new_empty(node.shape[0], node.shape[1], w3.shape[0])


@torch.library.custom_op("mimo_fast::mpnn_message_sum_backward", mutates_args=())
def _backward_op(grad: Tensor, node: Tensor, edge: Tensor, w1: Tensor, b1: Tensor, w2: Tensor,
                 b2: Tensor, w3: Tensor, b3: Tensor, mask: Optional[Tensor], out_act: str,
                 backend: str) -> List[Tensor]:
    tensors = (node, edge, w1, b1, w2, b2, w3, b3)
    return backward(_impl(backend, tensors, out_act), grad.contiguous(), *tensors, mask, out_act)


@_backward_op.register_fake
def _(grad, node, edge, w1, b1, w2, b2, w3, b3, mask, out_act, backend):
    return [torch.empty_like(t) for t in (node, edge, w1, b1, w2, b2, w3, b3)]


def _setup_context(ctx, inputs, output):
    *tensors, mask, out_act, backend = inputs
    ctx.save_for_backward(*tensors, mask)
    ctx.out_act, ctx.backend = out_act, backend


def _backward(ctx, grad):
    *tensors, mask = ctx.saved_tensors
    grads = _backward_op(grad, *tensors, mask, ctx.out_act, ctx.backend)
    needs = ctx.needs_input_grad
    return (*[g if needs[i] else None for i, g in enumerate(grads)], None, None, None)


_op.register_autograd(_backward, setup_context=_setup_context)


def mpnn_message_sum(node: Tensor, edge: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor,
                     w3: Tensor, b3: Tensor, mask: Optional[Tensor] = None, *,
                     out_act: str = "none", backend: Optional[str] = None) -> Tensor:
    r"""All-pairs message-and-sum of an MPNN with a 3-layer message MLP.

    .. math::
        h_{bnj} = \mathrm{relu}(W_2\,\mathrm{relu}(W_1 [x_{bn}; x_{bj}; e_{bnj}] + b_1) + b_2),\quad
        \mathrm{out}[b,n] = m_{bn} \sum_{j\ne n,\ m_{bj}} \sigma(W_3 h_{bnj} + b_3)

    with :math:`\sigma` the identity (``out_act="none"``) or ReLU (``"relu"``).

    Args:
        node: ``(B, N, F)`` float32/float64 node features.
        edge: ``(B, N, N, E)`` edge attributes; ``edge[b, n, j]`` is seen by receiver n.
        w1, b1: ``(H1, 2F+E)``, ``(H1,)``; columns ordered [receiver, sender, edge].
        w2, b2: ``(H2, H1)``, ``(H2,)``.
        w3, b3: ``(Fo, H2)``, ``(Fo,)``.
        mask: ``(B, N)`` bool or None. Masked nodes send nothing and receive zeros.
        out_act: activation of the message MLP's last layer, applied per message before
            the sum: ``"none"`` (the sum is taken before W3, which then runs once per
            receiver) or ``"relu"`` (the GEPNet / GNN-detector authors' code; W3 runs per
            pair, fused in the kernels).
        backend: ``None`` (fastest available, see :mod:`mimo_fast.ops.registry`) or a name.

    Returns:
        ``(B, N, Fo)``. Every floating input gets a gradient.
    """
    for name, t in (("node", node), ("edge", edge), ("w1", w1), ("b1", b1), ("w2", w2),
                    ("b2", b2), ("w3", w3), ("b3", b3)):
        V.tensor(name, t, OP)
    if mask is not None:
        V.tensor("mask", mask, OP)
    if not isinstance(out_act, str) or out_act not in OUT_ACTS:
        raise ValueError(f"{OP}: out_act must be one of {OUT_ACTS}, got {out_act!r}")
    run = eager.pick(OP, _forward, _op, node, edge, w1, b1, w2, b2, w3, b3, mask)
    return run(node, edge, w1, b1, w2, b2, w3, b3, mask, out_act, registry.backend_arg(backend))
