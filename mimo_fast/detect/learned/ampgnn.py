"""``ampgnn``: complex AMP whose Gaussian posterior is replaced by an MPNN (He et al.,
AMP-GNN, Algorithm 1 and Sections III-C, IV-A).

Each of the ``T`` layers:

    r, Sigma, z, V = amp_step(H, y, x_hat, v_hat, z_prev, V_prev, sigma^2)    (8a)-(8d)
    d_K = [Re r_k, Sigma_k] / [Im r_k, Sigma_k]                                 (13)
    (u, g) = MPNN(u, g; edges f_KJ = [h_K^T h_J, sigma^2], attribute d_K)      (15)-(17), L rounds
    p(x_K) = softmax(R(u_K))  over the PAM levels (sqrt(Q) of them)             (18), (29)
    x_hat = E[x], v_hat = Var[x] under p(Re x) p(Im x)                          (30)

The MPNN runs on the real-equivalent graph (node K = the real or imaginary part of a
user), since the paper's readout is over "the real-valued constellation set, i.e.
sqrt(Q)"; its node features are eq. (14) ``[y_r^T h_K, h_K^T h_K, sigma^2]`` with the
complex noise variance of Algorithm 1, and ``(u, g)`` is carried across layers (19).
AMP starts from ``x_hat = 0``, ``v_hat = Es`` and ``z_prev = y``; the output is the last
layer's ``p``. Loss: ``||x - x_hat^(T)||^2`` (31), averaged over the batch.

Masked users: ``x_hat = v_hat = 0`` removes them from AMP's sums exactly (``V = |H|^2 v``,
``z = H x``); their columns of H are replaced by a fixed unit-norm column inside AMP so
their own ``Sigma`` stays finite, and they send no messages.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from mimo_fast import ops
from mimo_fast.detect.base import real_dtype
from mimo_fast.detect.learned.gnn import (LEGACY_MPNN, GraphDetector, _check_positive_int, moments,
                                          pam_levels, qam_log_probs, real_graph, valid_indices)
from mimo_fast.nn.mlp import check_sizes


class AMPGNN(GraphDetector):
    """AMP-GNN (see the module docstring for the equations).

    Options: ``iterations`` T (10), ``rounds`` L (2), ``node_size`` N_u (8),
    ``message_hidden`` (N_h1, N_h2) ((16, 8)), ``gru_size`` N_h1 (16), ``readout_hidden``
    ((16, 8)), ``min_noise_var`` (1e-6). Paper sizes: Table IV. Structure options, at the
    paper's text (no authors' code was available to check it; docs/fidelity.md):
    ``message_out_act`` (``"none"``: ReLU after the message MLP's hidden layers only, eq. 16)
    and ``readout_act`` (``"relu"``: ReLU after the readout's hidden layers, eq. 18).
    """

    name = "ampgnn"
    needs_separable = True
    _options = ("iterations", "rounds", "node_size", "message_hidden", "gru_size",
                "readout_hidden", "min_noise_var", "message_out_act", "readout_act")
    LEGACY_STRUCTURE = dict(LEGACY_MPNN)

    def __init__(self, constellation, *, iterations: int = 10, rounds: int = 2, node_size: int = 8,
                 message_hidden=(16, 8), gru_size: int = 16, readout_hidden=(16, 8),
                 min_noise_var: float = 1e-6, message_out_act: str = "none", readout_act: str = "relu", **kw):
        super().__init__(constellation, **kw)
        pam_levels(self)
        self._structure(message_out_act, readout_act)
        self.iterations = _check_positive_int("iterations", self.name, iterations)
        self.rounds = _check_positive_int("rounds", self.name, rounds)
        self.node_size, self.gru_size, self.min_noise_var = node_size, gru_size, float(min_noise_var)
        self.message_hidden = check_sizes("message_hidden", message_hidden, 2)
        self.readout_hidden = check_sizes("readout_hidden", readout_hidden, 2)
        self.mpnn = self._mpnn(readout_out=self.constellation.real_levels.numel(), attr_features=2,
                               node_size=node_size, message_hidden=message_hidden, gru_size=gru_size,
                               readout_hidden=readout_hidden, rounds=rounds)

    def _refine(self, u, g, edge, d, node_mask):
        """The MPNN step: L rounds of (15)-(17) with attribute ``d = [r, Sigma]`` (13), then
        the readout (18). Returns ``(u, g, PAM logits)``."""
        u, g = self.mpnn(u, g, edge, d, node_mask)
        return u, g, self.mpnn.readout(u)

    def _run(self, y, H, noise_var, mask) -> list:
        """``(PAM logits (B, 2Nt, L), x_hat (B, Nt))`` of every layer."""
        self._check_params(H)
        B, Nr, Nt = H.shape
        real = real_dtype(H.dtype)
        s2 = self._floor(noise_var)
        _, _, f, edge, node_mask = real_graph(H, y, mask, s2, 1.0)       # (14), f_jn = [a_n^T a_j, s2]
        H_amp = torch.where(mask[:, None, :], H, torch.full((), 1 / math.sqrt(Nr), dtype=H.dtype, device=H.device))
        levels = self.constellation.real_levels.to(dtype=real, device=H.device)
        zero, czero = torch.zeros((), dtype=real, device=H.device), torch.zeros((), dtype=H.dtype, device=H.device)
        x = torch.zeros(B, Nt, dtype=H.dtype, device=H.device)
        v = torch.where(mask, torch.full((), self.constellation.energy, dtype=real, device=H.device), zero)
        z_prev, V_prev = y, torch.zeros(B, Nr, dtype=real, device=H.device)
        u, g = self.mpnn.encode(f, node_mask)
        outs = []
        for _ in range(self.iterations):
            r, Sigma, z, V = ops.amp_step(H_amp, y, x, v, z_prev, V_prev, s2, backend=self.backend)  # (8a)-(8d)
            d = torch.stack([torch.cat([r.real, r.imag], 1), torch.cat([Sigma, Sigma], 1)], -1)      # (13)
            u, g, lg = self._refine(u, g, edge, d, node_mask)
            xs, vs = moments(lg.softmax(-1), levels)                                                 # (29)-(30)
            x = torch.where(mask, torch.complex(xs[:, :Nt], xs[:, Nt:]), czero)
            v = torch.where(mask, vs[:, :Nt] + vs[:, Nt:], zero)
            z_prev, V_prev = z, V
            outs.append((lg, x))
        return outs

    def _detect_masked(self, y, H, noise_var, mask):
        lg, _ = self._run(y, H, noise_var, mask)[-1]
        return qam_log_probs(lg.log_softmax(-1), self), None

    def training_loss(self, y, H, noise_var, x_idx, mask: Optional[Tensor] = None) -> Tensor:
        """L2 loss (31) of the last layer's estimate, summed over users, mean over the batch."""
        noise_var, mask = self.checked(y, H, noise_var, mask)
        _, x_hat = self._run(y, H, noise_var, mask)[-1]
        x = self.constellation.indices_to_points(valid_indices(x_idx, mask, self), H.dtype).to(H.device)
        err = torch.where(mask, (x - x_hat).abs().square(), torch.zeros((), dtype=x_hat.real.dtype, device=H.device))
        return err.sum(-1).mean()


__all__ = ["AMPGNN"]
