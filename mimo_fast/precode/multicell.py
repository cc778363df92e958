"""Coordinated beamforming in M cells (Model-GNN paper, Sec. III-E, problem P2).

BS m (N antennas) serves the K users of cell m. ``G`` is ``(B, M, N, M, K)`` complex with
``G[b, i, :, m, k] = h_{k_m, i}``, the channel from BS i to user k of cell m (all links
CN(0, I) by default; ``inter_gain`` beta < 1 draws the inter-cell links, i != m,
as CN(0, beta I): a stand-in for path loss, which the paper does not specify);
``V`` is ``(B, M, N, K)`` with ``V[b, m, :, k] = v_{k_m}``. P2::

    max sum_{m,k} log2(1 + |h_{k_m,m}^H v_{k_m}|^2 / (sum_{(j,i) != (k,m)} |h_{k_m,i}^H v_{j_i}|^2 + sigma0^2))
    s.t. Tr(V_m^H V_m) <= P_max for every m

* :func:`wmmse_mc`: WMMSE for the interfering broadcast channel (Shi et al. 2011, the paper's
  numerical baseline for Table V), one bisection for mu_m per BS; same convergence rule as
  :func:`mimo_fast.precode.wmmse.wmmse`.
* :class:`ModelGNNMC`: the Model-GNN on the multi-cell precoding graph (all MN antennas x MK
  users). Step 1 takes the Taylor term per BS: ``t_{n_i k_m} = sum_{m', j} a^{(i)}_{j_m' k_m}
  d_{n_i j_m'}`` with ``a^{(i)}_{j_m' k_m} = h_{j_m', i}^H d_{i, k_m}`` (inner products over BS i's
  antennas only). Step 2 aggregates the intra-cell (``p_a``, ``q_a``) and inter-cell (``p_r``,
  ``q_r``) neighbour edges separately: at user k_m, edges to BS m's antennas vs other BSs';
  at antenna n_i, edges to cell i's users vs other cells'. Intra- and inter-cell edges have
  their own weight sets. Sums over other BSs run over all their antennas (the paper's
  ``j != n`` there would tie antenna indices of different BSs and break the PE property);
  self terms are absorbed in S (eq. 12); term (c) is omitted (P acts on d only). The output
  of the intra-cell edges is V, power-normalised per BS. Equivariant to permuting cells,
  antennas within a BS and users within a cell.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mimo_fast.precode import classical
from mimo_fast.precode.gnn import layer_stack
from mimo_fast.precode.model_gnn import taylor_term
from mimo_fast.precode.wmmse import WMMSEInfo, _v_step


def check_G(G: torch.Tensor) -> None:
    if not isinstance(G, torch.Tensor) or not G.is_complex() or G.dim() != 5 or G.shape[1] != G.shape[3]:
        raise ValueError(f"G must be a complex (B, M, N, M, K) tensor, got {getattr(G, 'shape', G)!r}")


def draw_channels_mc(batch: int, m: int, n: int, k: int, *, generator: torch.Generator,
                     dtype: torch.dtype = torch.complex64, inter_gain: float = 1.0) -> torch.Tensor:
    """``(batch, m, n, m, k)`` channels: own-cell links CN(0, 1), inter-cell links CN(0, inter_gain)."""
    for name, v in (("batch", batch), ("cells", m), ("n", n), ("k", k)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not 0 < inter_gain <= 1:
        raise ValueError(f"inter_gain must be in (0, 1], got {inter_gain!r}")
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    z = torch.randn(batch, m, n, m, k, 2, generator=generator, dtype=real) * 0.5 ** 0.5
    if inter_gain != 1.0:
        scale = torch.full((m, 1, m, 1, 1), float(inter_gain) ** 0.5, dtype=real)
        scale[torch.arange(m), 0, torch.arange(m)] = 1.0
        z = z * scale
    return torch.view_as_complex(z).to(dtype)


def _gains(G: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``E[b, (m,k), (i,j)] = h_{k_m, i}^H v_{j_i}`` as ``(B, MK, MK)``."""
    b, m, _, _, k = G.shape
    return torch.einsum("binmk,binj->bmkij", G.conj(), V).reshape(b, m * k, m * k)


def rates_mc(G: torch.Tensor, V: torch.Tensor, noise_var: float) -> torch.Tensor:
    """``(B, M, K)`` rates of P2."""
    check_G(G)
    b, m, n, _, k = G.shape
    if V.shape != (b, m, n, k):
        raise ValueError(f"V must be (B, M, N, K) = {(b, m, n, k)}, got {tuple(V.shape)}")
    P = _gains(G, V).abs().square()
    sig = torch.diagonal(P, dim1=-2, dim2=-1)
    return torch.log2(1 + sig / (P.sum(-1) - sig + noise_var)).reshape(b, m, k)


def sum_se_mc(G: torch.Tensor, V: torch.Tensor, noise_var: float) -> torch.Tensor:
    return rates_mc(G, V, noise_var).sum((-2, -1))


def power_normalize_mc(V: torch.Tensor, p_max: float = 1.0) -> torch.Tensor:
    """``Tr(V_m^H V_m) = P_max`` for every BS."""
    return V * (float(p_max) ** 0.5 / V.abs().square().sum((-2, -1), keepdim=True).clamp_min(1e-30).sqrt())


def own_channels(G: torch.Tensor) -> torch.Tensor:
    """``(B, M, N, K)``: ``H_m = G[:, m, :, m, :]``, each BS to its own users."""
    ar = torch.arange(G.shape[1], device=G.device)
    return G[:, ar, :, ar].permute(1, 0, 2, 3)


def per_cell(method, G: torch.Tensor, *args, p_max: float = 1.0) -> torch.Tensor:
    """An uncoordinated single-cell precoder (mrt, zf, rzf) applied by every BS to its own users."""
    H = own_channels(G)
    b, m, n, k = H.shape
    return method(H.reshape(b * m, n, k), *args, p_max=p_max).reshape(b, m, n, k)


def coordinated_rzf(G: torch.Tensor, noise_var: float, p_max: float = 1.0) -> torch.Tensor:
    """Coordinated RZF (ours, a reference for P2): BS i uses the columns of its own users in
    ``H_i (H_i^H H_i + (M K sigma0^2 / P_max) I)^{-1}``, ``H_i`` (N x MK) = BS i to every user, so it
    suppresses its interference at the other cells' users too; equal power per user."""
    check_G(G)
    b, m, n, _, k = G.shape
    Hall = G.reshape(b * m, n, m * k)
    eye = torch.eye(m * k, dtype=G.dtype, device=G.device)
    W = (Hall @ torch.linalg.solve(Hall.mH @ Hall + (m * k * noise_var / p_max) * eye, eye)).reshape(b, m, n, m, k)
    ar = torch.arange(m, device=G.device)
    own = W[:, ar, :, ar].permute(1, 0, 2, 3)                      # (B, M, N, K)
    return classical.equal_power(own.reshape(b * m, n, k), p_max).reshape(b, m, n, k)


def wmmse_mc(G: torch.Tensor, noise_var: float, p_max: float = 1.0, *, tol: float = 1e-6,
             max_iter: int = 500) -> tuple[torch.Tensor, WMMSEInfo]:
    """WMMSE for P2 (module docstring); initial point: per-cell RZF."""
    check_G(G)
    if not noise_var > 0:
        raise ValueError(f"noise_var must be > 0, got {noise_var!r}")
    dtype = G.dtype
    G = G.to(torch.complex128)
    b, m, n, _, k = G.shape
    V = per_cell(classical.rzf, G, noise_var, p_max=p_max)
    se = sum_se_mc(G, V, noise_var)
    active = torch.ones_like(se, dtype=torch.bool)
    Hall = G.reshape(b * m, n, m * k)                               # BS i to every user
    Hown = own_channels(G).reshape(b * m, n, k)
    it = 0
    while it < max_iter and bool(active.any()):
        it += 1
        E = _gains(G, V)
        sig = torch.diagonal(E, dim1=-2, dim2=-1)                   # (B, MK)
        T = E.abs().square().sum(-1) + noise_var
        u = sig / T
        w = 1.0 / (1.0 - sig.abs().square() / T).clamp_min(1e-300)
        a = (w * u.abs().square()).repeat_interleave(m, 0)          # (B*M, MK)
        uw = (u * w).reshape(b * m, 1, k)                           # own users of each BS
        V_new = _v_step(Hall, a, Hown * uw, p_max).reshape(b, m, n, k)
        se_new = sum_se_mc(G, V_new, noise_var)
        V = torch.where(active[:, None, None, None], V_new, V)
        gain = se_new - se
        se = torch.where(active, se_new, se)
        active = active & (gain >= tol * se.clamp_min(1.0))
    return V.to(dtype), WMMSEInfo(iterations=it, converged=~active, history=None)


class _Weights(nn.Module):
    """One edge type's weights: S on c, p_a / p_r on d (term (c) omitted), q_a / q_r on c."""

    def __init__(self, j_in: int, j_out: int):
        super().__init__()
        self.S = nn.Linear(2 * j_in, j_out, bias=False)
        self.Pa = nn.Linear(j_in, j_out, bias=False)
        self.Pr = nn.Linear(j_in, j_out, bias=False)
        self.Qa = nn.Linear(2 * j_in, j_out, bias=False)
        self.Qr = nn.Linear(2 * j_in, j_out, bias=False)

    def forward(self, C, Da, Dr, Ca, Cr):
        return self.S(C) + self.Pa(Da) + self.Pr(Dr) + self.Qa(Ca) + self.Qr(Cr)


class ModelGNNMCLayer(nn.Module):
    def __init__(self, j_in: int, j_out: int, pooling: str = "mean"):
        super().__init__()
        self.intra = _Weights(j_in, j_out)
        self.inter = _Weights(j_in, j_out)
        self.pooling = pooling

    def forward(self, D: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        b, m, n, _, k, j = D.shape
        ar = torch.arange(m, device=D.device)
        T = taylor_term(D.reshape(b * m, n, m * k, j), G.reshape(b * m, n, m * k)).reshape(D.shape)
        C = torch.cat([D, T], -1)
        # at user k_m: intra = antennas of BS m, inter = antennas of the other BSs
        d_user = D.sum(2)                                               # (B, M_bs, M, K, J)
        Da = d_user[:, ar, ar]                                          # (B, M, K, J)
        Dr = d_user.sum(1) - Da
        # at antenna n_i: intra = users of cell i, inter = users of the other cells
        c_ant = C.sum(4)                                                # (B, M_bs, N, M, 2J)
        Ca = c_ant[:, ar, :, ar].permute(1, 0, 2, 3)                    # (B, M, N, 2J)
        Cr = c_ant.sum(3) - Ca
        if self.pooling == "mean":
            Da, Dr = Da / n, Dr / max((m - 1) * n, 1)
            Ca, Cr = Ca / k, Cr / max((m - 1) * k, 1)
        Da, Dr = Da[:, None, None], Dr[:, None, None]                   # broadcast over (BS, antenna)
        Ca, Cr = Ca[:, :, :, None, None], Cr[:, :, :, None, None]       # broadcast over (cell, user)
        out_intra = self.intra(C, Da, Dr, Ca, Cr)
        out_inter = self.inter(C, Da, Dr, Ca, Cr)
        intra = (ar[:, None] == ar[None, :]).view(1, m, 1, m, 1, 1)
        return torch.where(intra, out_intra, out_inter)


class ModelGNNMC(nn.Module):
    """``V = G_M(G)``: ``(B, M, N, M, K)`` -> ``(B, M, N, K)`` with ``Tr(V_m^H V_m) = P_max``."""

    name = "model-gnn-mc"

    def __init__(self, widths: Sequence[int] = (32, 32, 8), pooling: str = "mean"):
        super().__init__()
        self.widths, self.layers = layer_stack(ModelGNNMCLayer, widths, pooling, even=True)
        self.pooling = pooling

    def config(self) -> dict:
        return {"widths": list(self.widths), "pooling": self.pooling}

    def forward(self, G: torch.Tensor, p_max: float = 1.0) -> torch.Tensor:
        check_G(G)
        D = torch.view_as_real(G).to(self.layers[0].intra.S.weight.dtype)
        for i, layer in enumerate(self.layers):
            D = layer(D, G)
            if i < len(self.layers) - 1:
                D = D / D.square().flatten(1).sum(-1).clamp_min(1e-30).sqrt().view(-1, 1, 1, 1, 1, 1)
        ar = torch.arange(G.shape[1], device=G.device)
        Vr = D[:, ar, :, ar].permute(1, 0, 2, 3, 4)                     # intra-cell edges (B, M, N, K, 2)
        return power_normalize_mc(torch.view_as_complex(Vr.contiguous()), p_max)


__all__ = ["draw_channels_mc", "rates_mc", "sum_se_mc", "power_normalize_mc", "own_channels", "per_cell",
           "wmmse_mc", "coordinated_rzf", "ModelGNNMC", "ModelGNNMCLayer", "check_G"]
