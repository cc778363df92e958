"""The MPNN block of the GNN detectors (AMP-GNN paper Section III-C; E2E paper Section II).

Nodes ``n = 1..N`` (users or real-valued symbols), every pair connected. With node
features ``f_n``, edge attributes ``e_nj`` (seen by receiver n) and node attributes
``d_n`` (the outer algorithm's current estimate, constant during the rounds):

    u_n^(0) = W_1 f_n + b_1,   g_n^(0) = 0                        (AMP-GNN 14, E2E 11)
    m_n^(l) = sum_{j != n} D([u_n^(l-1), u_j^(l-1), e_nj])         (15)-(16), E2E (1)
    g_n^(l) = GRU(g_n^(l-1), [m_n^(l), d_n])                       (17a), E2E (2a)
    u_n^(l) = W_2 g_n^(l) + b_2                                    (17b), E2E (2b)
    p_n     = softmax(R(u_n^(L)))                                  (18), (29), E2E (3)

``D`` and ``R`` are 3-layer MLPs. Their activations are options (the parameters do not
change with them; docs/fidelity.md gives the sources):

* ``message_out_act``: ``"none"`` (default; the AMP-GNN paper's text: ReLU after the two
  hidden layers of ``D`` only) or ``"relu"`` (the GEPNet and GNN-detector authors' code:
  a ReLU after ``D``'s last layer too, per message, before the sum over senders);
* ``readout_act``: ``"relu"`` (default; ReLU after ``R``'s hidden layers) or ``"none"``
  (the authors' code: ``R`` is affine, the softmax follows);
* ``attr_features=0``: the GRU's input is the message sum alone (``[m_n]``, no ``d_n``;
  the GNN-detector authors' code and GNN-tx).

The all-pairs sum is :func:`mimo_fast.ops.mpnn_message_sum` (its ``out_act`` is
``message_out_act``), so the fused backends do the ``N^2`` work without holding a
per-pair buffer. ``(u, g)`` after L rounds is handed to the next outer iteration
(eq. 19): :meth:`MPNN.encode` starts it, :meth:`MPNN.forward` runs the L rounds,
:meth:`MPNN.readout` gives the unnormalised logits ``R(u)`` (callers take the softmax).

Masks: ``mask (B, N)`` bool, False = the node is absent. Absent nodes send no messages
(the op's mask) and their state is held at zero, so whatever the caller puts in their
features or attributes changes nothing for the others.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mimo_fast import ops
from mimo_fast.nn.mlp import MLP, check_act, check_sizes


def _positive_int(name: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


class MPNN(nn.Module):
    """Message-passing neural network with GRU aggregation (see the module docstring).

    Args:
        in_features: size of the node features ``f_n`` of the encoder (3 in both papers:
            ``[y^T h_n, h_n^T h_n, sigma^2]``).
        edge_features: size of the edge attributes (2: ``[+-h_n^T h_j, sigma^2]``).
        attr_features: size of the node attribute ``d_n`` fed to the GRU (2: mean, variance).
        node_size: size of ``u_n`` (AMP-GNN ``N_u`` = 8; GEPNet ``S_u`` = 8).
        message_hidden: hidden sizes of the message MLP ``D`` (AMP-GNN ``(N_h1, N_h2)``
            = (16, 8); GEPNet ``(N_p1, N_p2)`` = (64, 32) or (128, 64)).
        gru_size: size of the GRU state ``g_n`` (AMP-GNN ``N_h1``; GEPNet ``N_u1``).
        readout_hidden: hidden sizes of the readout MLP ``R``.
        readout_out: number of readout logits per node (the alphabet size).
        readout_in: input size of ``R`` (default ``node_size``; the E2E paper's GNN-rx reads
            two nodes' features stacked, ``2 S_u``).
        rounds: ``L``, message-passing rounds per call.
        message_out_act: ``"none"`` or ``"relu"``: activation after the message MLP's last
            layer, per message before the sum (the op's ``out_act``).
        readout_act: ``"relu"`` or ``"none"``: activation after the readout MLP's hidden
            layers (``"none"``: an affine readout).
        backend: passed to :func:`mimo_fast.ops.mpnn_message_sum` (None = automatic).
    """

    def __init__(self, *, readout_out: int, in_features: int = 3, edge_features: int = 2,
                 attr_features: int = 2, node_size: int = 8, message_hidden=(64, 32),
                 gru_size: int = 64, readout_hidden=(64, 32), readout_in: Optional[int] = None,
                 rounds: int = 2, message_out_act: str = "none", readout_act: str = "relu",
                 backend: Optional[str] = None):
        super().__init__()
        for name, v in (("readout_out", readout_out), ("in_features", in_features),
                        ("edge_features", edge_features), ("node_size", node_size),
                        ("gru_size", gru_size), ("rounds", rounds)):
            _positive_int(name, v)
        if not isinstance(attr_features, int) or isinstance(attr_features, bool) or attr_features < 0:
            raise ValueError(f"attr_features must be an int >= 0, got {attr_features!r}")
        message_hidden = check_sizes("message_hidden", message_hidden, 2)
        readout_hidden = check_sizes("readout_hidden", readout_hidden, 2)
        readout_in = node_size if readout_in is None else _positive_int("readout_in", readout_in)
        self.message_out_act = check_act("message_out_act", message_out_act)
        self.readout_act = check_act("readout_act", readout_act)
        self.in_features, self.edge_features, self.attr_features = in_features, edge_features, attr_features
        self.node_size, self.gru_size, self.rounds, self.backend = node_size, gru_size, rounds, backend
        self.encoder = nn.Linear(in_features, node_size)                                # W_1, b_1 (14)
        self.message = MLP((2 * node_size + edge_features, *message_hidden, node_size),  # D (16)
                           out_act=message_out_act)
        self.gru = nn.GRUCell(node_size + attr_features, gru_size)                     # U (17a)
        self.update = nn.Linear(gru_size, node_size)                                   # W_2, b_2 (17b)
        self.readout_mlp = MLP((readout_in, *readout_hidden, readout_out),             # R (18)
                               hidden_act=readout_act)

    # --- checks --------------------------------------------------------------------
    def _check(self, name: str, t: Tensor, shape: tuple, ref: Tensor) -> None:
        if not isinstance(t, Tensor):
            raise TypeError(f"MPNN: {name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"MPNN: {name} must have shape {shape}, got {tuple(t.shape)}")
        if t.dtype != ref.dtype or t.device != ref.device:
            raise TypeError(f"MPNN: {name} is {t.dtype} on {t.device} but the parameters are "
                            f"{ref.dtype} on {ref.device}; convert the model (e.g. .double()) or the input")

    def _mask(self, mask: Optional[Tensor], B: int, N: int) -> Optional[Tensor]:
        if mask is None:
            return None
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError("MPNN: mask must be a bool tensor of shape (B, N) or None")
        if tuple(mask.shape) != (B, N):
            raise ValueError(f"MPNN: mask must have shape {(B, N)}, got {tuple(mask.shape)}")
        return mask

    @staticmethod
    def _hold(x: Tensor, mask: Optional[Tensor]) -> Tensor:
        # where, not multiply: an absent node's garbage (inf, NaN) must not survive as NaN.
        return x if mask is None else torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))

    # --- the three steps -----------------------------------------------------------
    def encode(self, features: Tensor, mask: Optional[Tensor] = None):
        """``features (B, N, in_features)`` -> initial state ``(u (B, N, node_size),
        g (B, N, gru_size))``: eq. (14) / E2E (11), ``g = 0``."""
        w = self.encoder.weight
        if not isinstance(features, Tensor) or features.dim() != 3:
            raise ValueError("MPNN: features must be a (B, N, in_features) tensor")
        B, N, _ = features.shape
        self._check("features", features, (B, N, self.in_features), w)
        mask = self._mask(mask, B, N)
        u = self._hold(self.encoder(features), mask)
        g = u.new_zeros(B, N, self.gru_size)
        return u, g

    def forward(self, u: Tensor, g: Tensor, edge: Tensor, attr: Optional[Tensor] = None,
                mask: Optional[Tensor] = None):
        """``L`` rounds of (15)-(17) from state ``(u, g)``; returns the new ``(u, g)``.

        Args:
            u: ``(B, N, node_size)``, g: ``(B, N, gru_size)`` (from :meth:`encode` or the
                previous call, eq. 19).
            edge: ``(B, N, N, edge_features)``; ``edge[b, n, j]`` is seen by receiver n.
            attr: ``(B, N, attr_features)`` node attributes ``d_n`` (None when 0 features).
            mask: ``(B, N)`` bool or None.
        """
        w = self.encoder.weight
        if not isinstance(u, Tensor) or u.dim() != 3:
            raise ValueError("MPNN: u must be a (B, N, node_size) tensor")
        B, N, _ = u.shape
        self._check("u", u, (B, N, self.node_size), w)
        self._check("g", g, (B, N, self.gru_size), w)
        self._check("edge", edge, (B, N, N, self.edge_features), w)
        mask = self._mask(mask, B, N)
        if self.attr_features:
            self._check("attr", attr, (B, N, self.attr_features), w)
            attr = self._hold(attr, mask)
        elif attr is not None:
            raise ValueError("MPNN: attr must be None for a model with attr_features=0")
        params = self.message.flat_parameters()
        for _ in range(self.rounds):
            m = ops.mpnn_message_sum(u, edge, *params, mask, out_act=self.message_out_act,
                                     backend=self.backend)                               # (15)-(16)
            x = m if attr is None else torch.cat([m, attr], -1)                          # [sum m, d_n]
            g = self.gru(x.reshape(B * N, -1), g.reshape(B * N, -1)).reshape(B, N, -1)   # (17a)
            g = self._hold(g, mask)
            u = self._hold(self.update(g), mask)                                         # (17b)
        return u, g

    def readout(self, u: Tensor) -> Tensor:
        """``R(u)`` on the last dimension: unnormalised logits (18); softmax is (29)."""
        return self.readout_mlp(u)

    def extra_repr(self) -> str:
        return (f"rounds={self.rounds}, message_out_act={self.message_out_act!r}, "
                f"readout_act={self.readout_act!r}, backend={self.backend!r}")


__all__ = ["MPNN"]
