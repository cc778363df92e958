"""GNN-tx: the GNN modulator of the E2E paper (Chang et al., Section IV-A).

The graph has one node per constellation point ``m = 1..M`` and every pair connected:

    u_m^(0) = [Re a_m, Im a_m]                                   initial points (a QAM)
    e_nm    = |a_n - a_m| / max_{n', m'} |a_n' - a_m'|           normalised distance
    m_m^(l) = sum_{n != m} P([u_m^(l-1), u_n^(l-1), e_nm])        E2E (1)
    g_m^(l) = GRU(g_m^(l-1), sum of messages),  g^(0) = 0        E2E (2a), no prior r_m
    u_m^(l) = W g_m^(l) + b                                      E2E (2b), S_u^tx = 2
    a_hat_m = (u_m^(L)[0] + j u_m^(L)[1]) / P,
    P = sqrt(sum_m ||u_m^(L)||^2 / M)                            unit average power

``P`` is the 3-layer message MLP (hidden ``N_p1, N_p2``, ReLU), the GRU has ``N_u1``
units, and the message sum is :func:`mimo_fast.ops.mpnn_message_sum`. The paper prints
the edge feature as ``|a_n - a_m| / max(|a_n - a_m|, sigma^2)``; we read it as the
distance normalised by the largest one (the brief's "normalised distances"): the points
are fixed, so it is a constant of the graph. Its power constraint is printed with the
``/M`` outside the square root; unit average power needs it inside, as written above.

Option ``residual`` (this library's, not the paper's): ``u^(l) = u^(0) + s (W g^(l) + b)``
with ``W, b`` zero-initialised and ``s = residual_scale``, so the modulator starts as
exactly the initial QAM and training moves the points from there. Two measured reasons:
the plain eq. 2b starts from a nearly collapsed constellation (a random GNN gives all
nodes almost the same output: minimum distance ~1e-3 after normalisation, the QAM's is
0.63), and with Adam at lr 1e-3 every one of the ``N_u1`` weights of ``W`` moves by ~lr
per step, so the 32 coordinates random-walk by up to ``N_u1 * lr`` per step; with ``s = 1``
the 8x8 constellation drifted as a whole by ~0.9 in 150 steps and the SER went from EP's
0.012 to 0.29. ``s`` scales that step (default 0.05).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mimo_fast import ops
from mimo_fast.comm import Constellation, as_constellation
from mimo_fast.nn.mlp import MLP, check_sizes

NODE_SIZE = 2   # S_u^tx: the real and imaginary part of a point


def distance_edges(points: Tensor) -> Tensor:
    """``(M,)`` complex points -> ``(1, M, M, 1)`` real edge attributes ``|a_n - a_m| / max``."""
    d = (points[:, None] - points[None, :]).abs()
    return (d / d.max()).to(points.real.dtype)[None, ..., None]


class GNNTx(nn.Module):
    """The GNN modulator (see the module docstring); ``forward()`` returns the ``(M,)``
    complex learned points with unit average power (differentiable in the parameters).

    Args:
        init: the initial constellation (``"qam16"``, 16, or a :class:`Constellation`).
        message_hidden: ``(N_p1, N_p2)`` of the message MLP (paper: (128, 64)).
        gru_size: ``N_u1`` (paper: 128).
        rounds: ``L`` (paper: 2).
        residual: start from the initial points exactly (see the module docstring).
        residual_scale: ``s``, the scale of the learned displacement when ``residual``.
        backend: passed to :func:`mimo_fast.ops.mpnn_message_sum`.
    """

    def __init__(self, init, *, message_hidden=(128, 64), gru_size: int = 128, rounds: int = 2,
                 residual: bool = False, residual_scale: float = 0.05, backend: Optional[str] = None):
        super().__init__()
        c = as_constellation(init)
        message_hidden = check_sizes("message_hidden", message_hidden, 2)
        for name, v in (("gru_size", gru_size), ("rounds", rounds)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"GNNTx: {name} must be a positive int, got {v!r}")
        if not isinstance(residual, bool):
            raise TypeError(f"GNNTx: residual must be a bool, got {residual!r}")
        if not (isinstance(residual_scale, (int, float)) and not isinstance(residual_scale, bool)
                and residual_scale > 0):
            raise ValueError(f"GNNTx: residual_scale must be a positive float, got {residual_scale!r}")
        self.residual_scale = float(residual_scale)
        self.init_name, self.order, self.rounds = c.name, c.order, rounds
        self.residual, self.backend = residual, backend
        pts = c.points.to(torch.complex64)
        # constants of the graph, saved with the weights so a file fully defines the modulator
        self.register_buffer("u0", torch.stack([pts.real, pts.imag], -1)[None])     # (1, M, 2)
        self.register_buffer("edge", distance_edges(pts))                            # (1, M, M, 1)
        self.message = MLP((2 * NODE_SIZE + 1, *message_hidden, NODE_SIZE))           # P (1)
        self.gru = nn.GRUCell(NODE_SIZE, gru_size)                                     # U (2a)
        self.update = nn.Linear(gru_size, NODE_SIZE)                                   # W, b (2b)
        if residual:
            nn.init.zeros_(self.update.weight)
            nn.init.zeros_(self.update.bias)

    def forward(self) -> Tensor:
        u, M = self.u0, self.order
        g = u.new_zeros(M, self.gru.hidden_size)
        params = self.message.flat_parameters()
        for _ in range(self.rounds):
            m = ops.mpnn_message_sum(u, self.edge, *params, None, backend=self.backend)   # (1)
            g = self.gru(m[0], g)                                                        # (2a)
            u = self.update(g)[None]                                                     # (2b)
            if self.residual:
                u = self.u0 + self.residual_scale * u
        u = u[0]
        P = u.square().sum(-1).mean().sqrt()                         # unit average power
        a = u / P
        return torch.complex(a[:, 0], a[:, 1])

    def constellation(self, name: Optional[str] = None) -> Constellation:
        """The current learned points as an ordinary :class:`Constellation` (no gradient)."""
        with torch.no_grad():
            pts = self.forward()
        return Constellation(pts.detach().cpu().to(torch.complex128), name=name or f"e2e-{self.init_name}")

    def extra_repr(self) -> str:
        return (f"init={self.init_name}, rounds={self.rounds}, residual={self.residual}, "
                f"residual_scale={self.residual_scale}")


__all__ = ["GNNTx", "distance_edges"]
