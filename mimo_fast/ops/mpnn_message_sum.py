"""``mimo_fast::mpnn_message_sum``: all-pairs message-and-sum of an MPNN layer.

    out[b, n] = mask[b, n] * sum_{j != n, mask[b, j]}
                w3 @ relu(w2 @ relu(w1 @ [node[b,n], node[b,j], edge[b,n,j]] + b1) + b2) + b3

The receiving node comes first in the concatenation (the message from j to n, AMP-GNN
paper eqs. 15-16); ``edge[b, n, j]`` is the edge attribute seen by n. Fused backends
never hold a ``B*N*N*H`` buffer: w1 splits into per-node projections, j is streamed,
the sum is taken before the last layer, and backward recomputes.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from mimo_fast.ops import registry
from mimo_fast.ops import validate as V

OP = "mpnn_message_sum"


def check(node, edge, w1, b1, w2, b2, w3, b3, mask) -> None:
    """Metadata checks (run by the real and the fake implementation)."""
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


@torch.library.custom_op("mimo_fast::mpnn_message_sum", mutates_args=())
def _op(node: Tensor, edge: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor,
        w3: Tensor, b3: Tensor, mask: Optional[Tensor], backend: str) -> Tensor:
    check(node, edge, w1, b1, w2, b2, w3, b3, mask)
    _check_values(node, edge, w1, b1, w2, b2, w3, b3)
    impl = registry.resolve(OP, backend, (node, edge, w1, b1, w2, b2, w3, b3)).ops[OP]
    return impl.forward(node, edge, w1, b1, w2, b2, w3, b3, mask)


@_op.register_fake
def _(node, edge, w1, b1, w2, b2, w3, b3, mask, backend):
    check(node, edge, w1, b1, w2, b2, w3, b3, mask)
    return node.new_empty(node.shape[0], node.shape[1], w3.shape[0])


@torch.library.custom_op("mimo_fast::mpnn_message_sum_backward", mutates_args=())
def _backward_op(grad: Tensor, node: Tensor, edge: Tensor, w1: Tensor, b1: Tensor, w2: Tensor,
                 b2: Tensor, w3: Tensor, b3: Tensor, mask: Optional[Tensor], backend: str) -> List[Tensor]:
    impl = registry.resolve(OP, backend, (node, edge, w1, b1, w2, b2, w3, b3)).ops[OP]
    return list(impl.backward(grad.contiguous(), node, edge, w1, b1, w2, b2, w3, b3, mask))


@_backward_op.register_fake
def _(grad, node, edge, w1, b1, w2, b2, w3, b3, mask, backend):
    return [torch.empty_like(t) for t in (node, edge, w1, b1, w2, b2, w3, b3)]


def _setup_context(ctx, inputs, output):
    *tensors, mask, backend = inputs
    ctx.save_for_backward(*tensors, mask)
    ctx.backend = backend


def _backward(ctx, grad):
    *tensors, mask = ctx.saved_tensors
    grads = _backward_op(grad, *tensors, mask, ctx.backend)
    needs = ctx.needs_input_grad
    return (*[g if needs[i] else None for i, g in enumerate(grads)], None, None)


_op.register_autograd(_backward, setup_context=_setup_context)


def mpnn_message_sum(node: Tensor, edge: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor,
                     w3: Tensor, b3: Tensor, mask: Optional[Tensor] = None, *,
                     backend: Optional[str] = None) -> Tensor:
    r"""All-pairs message-and-sum of an MPNN with a 3-layer message MLP.

    .. math::
        \mathrm{out}[b,n] = m_{bn} \sum_{j\ne n,\ m_{bj}}
            W_3\,\mathrm{relu}(W_2\,\mathrm{relu}(W_1 [x_{bn}; x_{bj}; e_{bnj}] + b_1) + b_2) + b_3

    Args:
        node: ``(B, N, F)`` float32/float64 node features.
        edge: ``(B, N, N, E)`` edge attributes; ``edge[b, n, j]`` is seen by receiver n.
        w1, b1: ``(H1, 2F+E)``, ``(H1,)``; columns ordered [receiver, sender, edge].
        w2, b2: ``(H2, H1)``, ``(H2,)``.
        w3, b3: ``(Fo, H2)``, ``(Fo,)``.
        mask: ``(B, N)`` bool or None. Masked nodes send nothing and receive zeros.
        backend: ``None`` (fastest available, see :mod:`mimo_fast.ops.registry`) or a name.

    Returns:
        ``(B, N, Fo)``. Every floating input gets a gradient.
    """
    for name, t in (("node", node), ("edge", edge), ("w1", w1), ("b1", b1), ("w2", w2),
                    ("b2", b2), ("w3", w3), ("b3", b3)):
        V.tensor(name, t, OP)
    if mask is not None:
        V.tensor("mask", mask, OP)
    return _op(node, edge, w1, b1, w2, b2, w3, b3, mask, registry.backend_arg(backend))
