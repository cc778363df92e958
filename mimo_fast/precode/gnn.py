"""Vanilla-GNN: the edge-GNN of the Model-GNN paper's eq. (4) (eq. (7) with sum pooling).

Each edge (n, k) of the precoding graph (antenna n, user k) carries a real vector
``d_nk`` of ``J_l`` features; ``d_nk^(0) = [Re h_nk, Im h_nk]`` and the last layer's
``[Re v_nk, Im v_nk]``. One layer::

    d_nk^(l) = sigma(S d_nk + PL_{i != n}(P d_ik) + PL_{j != k}(Q d_nj))          (4)

with PL = sum (eq. 7) or mean, and ``sigma(X) = X / ||X||`` over the whole sample (paper
Table I). The output passes through the power normalisation ``sqrt(P_max) V / ||V||_F``.
Sharing S, P, Q over edges makes ``G(Pi_AN^T H Pi_UE) = Pi_AN^T G(H) Pi_UE`` (2D-PE) and the
model works for any N, K. Note (ours): with this activation every layer is linear up to a
per-sample scale, so the whole network is a linear 2D-PE map of H followed by normalisation.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mimo_fast.precode.metrics import power_normalize

POOLINGS = ("sum", "mean")


def check_widths(widths, name: str = "widths", even: bool = False) -> tuple:
    widths = tuple(int(w) for w in widths)
    if not widths or any(w < 1 for w in widths) or (even and any(w % 2 for w in widths)):
        raise ValueError(f"{name} must be a non-empty list of positive{' even' if even else ''} integers, "
                         f"got {list(widths)}")
    return widths


def layer_stack(layer, widths, pooling: str, even: bool = False) -> tuple:
    """``(widths, nn.ModuleList)``: ``layer(j_in, j_out, pooling)`` for the feature sizes
    ``2 -> widths... -> 2`` (the [Re, Im] of an edge in and out), after checking ``pooling``
    and ``widths`` (``even``: complex channels, as the Model-GNNs read them)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    widths = check_widths(widths, even=even)
    dims = (2, *widths, 2)
    return widths, nn.ModuleList(layer(a, b, pooling) for a, b in zip(dims[:-1], dims[1:]))


def check_H(H: torch.Tensor) -> None:
    if not isinstance(H, torch.Tensor) or not H.is_complex() or H.dim() != 3:
        raise ValueError(f"H must be a complex (B, N, K) tensor, got "
                         f"{getattr(H, 'dtype', type(H))} {tuple(getattr(H, 'shape', ()))}")


def normalize_sample(X: torch.Tensor) -> torch.Tensor:
    """The paper's activation ``X / ||X||`` (Frobenius norm of each sample's edge features)."""
    return X / X.square().sum((1, 2, 3), keepdim=True).clamp_min(1e-30).sqrt()


class VanillaEdgeLayer(nn.Module):
    def __init__(self, j_in: int, j_out: int, pooling: str):
        super().__init__()
        self.S = nn.Linear(j_in, j_out, bias=False)
        self.P = nn.Linear(j_in, j_out, bias=False)
        self.Q = nn.Linear(j_in, j_out, bias=False)
        self.pooling = pooling

    def forward(self, D: torch.Tensor) -> torch.Tensor:       # D (B, N, K, J)
        n, k = D.shape[1:3]
        by_user = D.sum(1, keepdim=True) - D                   # sum over i != n of d_ik
        by_antenna = D.sum(2, keepdim=True) - D                # sum over j != k of d_nj
        if self.pooling == "mean":
            by_user = by_user / max(n - 1, 1)
            by_antenna = by_antenna / max(k - 1, 1)
        return self.S(D) + self.P(by_user) + self.Q(by_antenna)


class VanillaGNN(nn.Module):
    """``V = G(H)``: ``H (B, N, K)`` complex -> ``V (B, N, K)`` with ``Tr(V^H V) = P_max``."""

    name = "vanilla-gnn"

    def __init__(self, widths: Sequence[int] = (64, 512, 512, 64), pooling: str = "sum"):
        super().__init__()
        self.widths, self.layers = layer_stack(VanillaEdgeLayer, widths, pooling)
        self.pooling = pooling

    def config(self) -> dict:
        return {"widths": list(self.widths), "pooling": self.pooling}

    def forward(self, H: torch.Tensor, p_max: float = 1.0) -> torch.Tensor:
        check_H(H)
        D = torch.view_as_real(H).to(self.layers[0].S.weight.dtype)
        for i, layer in enumerate(self.layers):
            D = layer(D)
            if i < len(self.layers) - 1:
                D = normalize_sample(D)
        V = torch.view_as_complex(D.contiguous())
        return power_normalize(V, p_max)


__all__ = ["VanillaGNN", "VanillaEdgeLayer", "normalize_sample", "POOLINGS"]
