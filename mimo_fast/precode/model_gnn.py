"""Model-GNN (Guo & Yang, Sec. III-C): an edge-GNN whose update follows the first-order
Taylor expansion of the pseudo-inverse, ``D <- 2 D - D H^H D`` (eq. 5-6).

Edge (n, k) carries ``J_l`` real features, read as ``J_l / 2`` complex channels
(``d^(0)_nk = [Re h_nk, Im h_nk]``). One layer, per complex channel c:

    a_jk   = h_j^H d_k                          (A = H^H D, K x K)
    t_nk   = sum_j a_jk d_nj                    (T = D H^H D: the Taylor term)
    c_nk   = [d_nk, t_nk]                                                          (step 1)
    d'_nk  = sigma(S c_nk + P0 sum_i d_ik + Q sum_j c_nj)                  (eq. 12 / 15)

``S`` and ``Q`` act on the concatenation ``c`` (the paper's s_0, s_1 and q_0, q_1: term (b)
with the weights ``q_bar_jk``), ``P0`` only on ``d`` (term (a)): term (c) of eq. (15),
``p_1 sum_i sum_j a_jk d_ij``, is omitted as the paper does. sigma is ``X / ||X||`` per sample
(Table I); the output ``[Re v, Im v]`` goes through ``sqrt(P_max) V / ||V||_F``. Pooling is
the sum of eq. (12) or the mean. 2D-PE in H; works for any N, K.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mimo_fast.precode.gnn import check_H, layer_stack, normalize_sample
from mimo_fast.precode.metrics import power_normalize


def taylor_term(D: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """``D H^H D`` per complex channel: D real ``(B, N, K, J)`` (J even, (re, im) pairs),
    H complex ``(B, N, K)``; returns real ``(B, N, K, J)``."""
    b, n, k, j = D.shape
    Dc = torch.view_as_complex(D.reshape(b, n, k, j // 2, 2).contiguous())   # (B, N, K, C)
    Dc = Dc.permute(0, 3, 1, 2)                                            # (B, C, N, K)
    Hc = H.to(Dc.dtype).unsqueeze(1)
    A = Hc.mH @ Dc                                                         # a_jk = h_j^H d_k
    T = (Dc @ A).permute(0, 2, 3, 1)                                       # (B, N, K, C)
    return torch.view_as_real(T).reshape(b, n, k, j)


class ModelGNNLayer(nn.Module):
    def __init__(self, j_in: int, j_out: int, pooling: str = "sum"):
        super().__init__()
        self.S = nn.Linear(2 * j_in, j_out, bias=False)
        self.P = nn.Linear(j_in, j_out, bias=False)
        self.Q = nn.Linear(2 * j_in, j_out, bias=False)
        self.pooling = pooling

    def forward(self, D: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
        n, k = D.shape[1:3]
        C = torch.cat([D, taylor_term(D, H)], -1)                          # c_nk (step 1)
        by_user = D.sum(1, keepdim=True)                                   # term (a)
        by_antenna = C.sum(2, keepdim=True)                                # term (b)
        if self.pooling == "mean":
            by_user, by_antenna = by_user / n, by_antenna / k
        return self.S(C) + self.P(by_user) + self.Q(by_antenna)


class ModelGNN(nn.Module):
    """``V = G_M(H)``: complex ``(B, N, K)`` -> ``(B, N, K)`` with ``Tr(V^H V) = P_max``.
    ``widths`` are the hidden ``J_l`` (even; paper Table I: (32, 32, 8) for SE)."""

    name = "model-gnn"

    def __init__(self, widths: Sequence[int] = (32, 32, 8), pooling: str = "sum"):
        super().__init__()
        self.widths, self.layers = layer_stack(ModelGNNLayer, widths, pooling, even=True)
        self.pooling = pooling

    def config(self) -> dict:
        return {"widths": list(self.widths), "pooling": self.pooling}

    def raw(self, H: torch.Tensor) -> torch.Tensor:
        """The last layer's output as a complex ``(B, N, K)``, before power normalisation."""
        check_H(H)
        D = torch.view_as_real(H).to(self.layers[0].S.weight.dtype)
        for i, layer in enumerate(self.layers):
            D = layer(D, H)
            if i < len(self.layers) - 1:
                D = normalize_sample(D)
        return torch.view_as_complex(D.contiguous())

    def forward(self, H: torch.Tensor, p_max: float = 1.0) -> torch.Tensor:
        return power_normalize(self.raw(H), p_max)


class ModelGNNEE(ModelGNN):
    """Model-GNN for the EE problem P3 (paper Sec. IV-B-2, Fig. 7): the transmit power is a
    variable, so there is no power normalisation; the last layer's output is scaled by a
    factor ``eta_K`` that an FNN computes from K (trained jointly with the GNN; the paper:
    "we train a FNN with K as input and a factor eta_K as output, and then multiply eta_K
    with the learned precoding matrix of Model-GNN")::

        V = sqrt(P_max) eta_K G_M(H),   eta_K = exp(FNN(K / 16))

    (the exp keeps eta_K > 0; the input scaling K / 16 and the FNN widths ``eta_widths``
    are ours: the paper does not give them). Default ``widths``: Table I's (32, 32, 32, 8) for
    EE; the shipped EE files use (32, 32, 8) (docs/precoding.md). ``raw`` is the GNN output of :class:`ModelGNN`
    before its normalisation. Trained on the Lagrangian of
    :func:`mimo_fast.precode.energy.lagrangian`."""

    name = "model-gnn-ee"
    K_SCALE = 16.0

    def __init__(self, widths: Sequence[int] = (32, 32, 32, 8), pooling: str = "sum",
                 eta_widths: Sequence[int] = (16, 16)):
        super().__init__(widths, pooling)
        from mimo_fast.nn.mlp import MLP, check_sizes
        self.eta_widths = check_sizes("eta_widths", eta_widths)
        self.eta = MLP((1, *self.eta_widths, 1))

    def config(self) -> dict:
        return {**super().config(), "eta_widths": list(self.eta_widths)}

    def eta_k(self, k: int) -> torch.Tensor:
        x = torch.tensor([[k / self.K_SCALE]], dtype=self.eta.layers[0].weight.dtype)
        return self.eta(x).exp().reshape(())

    def forward(self, H: torch.Tensor, p_max: float = 1.0) -> torch.Tensor:
        return self.raw(H) * (self.eta_k(H.shape[-1]) * float(p_max) ** 0.5)


__all__ = ["ModelGNN", "ModelGNNEE", "ModelGNNLayer", "taylor_term"]
