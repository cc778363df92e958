"""``gepnet``: expectation propagation whose cavity is refined by a GNN (Kosasih et al.,
GEPNet, as described in Section II / IV-B of the E2E paper), real-equivalent model.

Each of the ``T`` iterations:

    Sigma, mu = LMMSE(H_r^T H_r / s2 + diag(lam), H_r^T y_r / s2 + gam)     (6)  } ops.ep_cavity
    v_obs = Sigma / (1 - Sigma lam),  x_obs = v_obs (mu / Sigma - gam)      (7b)-(7c) }
    (u, g) = MPNN(u, g; edges, attribute r_K = [x_obs, v_obs])              E2E (1)-(2), L rounds
    q(x_K) = softmax(R(u_K))                                                E2E (3): the refined cavity
    x_hat, v_hat = mean, variance of q                                      (8)   } ops.ep_update
    lam, gam  from (9) with the negative-precision rule, damped by eta      (9)-(10) }

The cavity follows EP's rules (:mod:`mimo_fast.ops.ep_iteration`): the mean from the
unfloored variance, and ``(mu, Sigma)`` where ``1 - Sigma lam <= 0``.

``u`` starts from E2E eq. (11) and is carried across iterations (AMP-GNN eq. 19). The
output is the last iteration's ``q``. The defaults follow the GEPNet authors' code where
it differs from the text (docs/fidelity.md): ReLU after the message MLP's last layer
(``message_out_act="relu"``), an affine readout (``readout_act="none"``), the node feature
``-h_K^T h_K`` (``node_sign=-1``), ``lam0 = 1 / E[x_K^2]`` (2 for unit-energy QAM) and the
variance floor ``v_min = 1e-13``. Files whose config lacks the structure options were
trained with :attr:`GEPNet.LEGACY_STRUCTURE` (the papers' text, lam0 = 1, v_min = 5e-7).
Two readouts (option ``readout``):

* ``"pam"`` (GEPNet): one distribution over the PAM levels per real node ``K``; a QAM
  point's logit is the sum of its two levels' log-probabilities.
* ``"complex"`` (the E2E paper's GNN-rx): user ``k`` reads ``[u_k, u_{k+Nt}]`` into a
  distribution over the ``Q`` points; (8) uses it for both real nodes
  (``q(x_k = Re a_m) = q(x_{k+Nt} = Im a_m) = s_{k,m}``). Works for any constellation,
  learned ones included.

Loss: cross-entropy of the readout against the transmitted levels (``"pam"``) or points
(``"complex"``, E2E eq. 12), averaged over the ``T`` iterations (GEPNet trains every
iteration's GNN output).

Masked users: their columns of H are zero and their diagonal of ``H_r^T H_r`` is set to
1, so they decouple from the LMMSE step while every quantity stays finite (also in the
gradient); they send no messages and keep ``lam = lam0``, ``gam = 0``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mimo_fast import ops
from mimo_fast.detect.base import complex_dtype, real_dtype
from mimo_fast.detect.learned.gnn import (LEGACY_MPNN, GraphDetector, _check_positive_int,
                                          masked_cross_entropy, pam_levels, pam_targets,
                                          qam_log_probs, real_graph, valid_indices)
from mimo_fast.nn.mlp import check_sizes

READOUTS = ("pam", "complex")
#: training losses: every iteration's cross-entropy averaged ("all"), or the last one's
#: alone ("final": the GEPNet authors' code and the E2E paper's eq. 12)
LOSSES = ("all", "final")

#: the smallest v_min that cavity_skip runs with in float32 (measured: v_min = 1e-13 gives
#: non-finite values at the first step, as classical EP in float32 does with that floor)
V_MIN_FLOAT32_CAVITY = 1e-9


def prior_precision(constellation) -> float:
    """``1 / E[x_K^2]``: the prior precision of a real node, equiprobable points (2 for a
    unit-energy QAM; the mean over the real and imaginary parts for any constellation),
    to 12 significant digits so that the config records 2.0, not the 2.0000000000000004 of
    a QAM whose energy is 1 up to rounding."""
    return float(f"{2.0 / float(constellation.energy):.12g}")


class GEPNet(GraphDetector):
    """GNN-aided EP (see the module docstring for the equations).

    Options: ``iterations`` T (10), ``rounds`` L (2), ``damping`` eta (0.7), ``readout``
    (``"pam"`` or ``"complex"``), ``node_size`` S_u (8), ``message_hidden`` (N_p1, N_p2)
    ((64, 32); the larger GEPNet uses (128, 64)), ``gru_size`` N_u1 (64), ``readout_hidden``
    (N_r1, N_r2) ((64, 32)), ``lam0`` initial precision (None: ``1 / E[x_K^2]`` of the
    constellation, 2 for unit-energy QAM, the authors' code; or a positive float; the
    config records the number), ``v_min`` floor on the variances (1e-13, the authors'
    code), ``min_noise_var`` (1e-6), ``message_out_act`` (``"relu"``), ``readout_act``
    (``"none"``), ``node_sign`` (-1: node feature ``-h_K^T h_K``). The features carry the
    real-model noise variance ``sigma^2`` (half the complex one) and the edge attribute
    is ``[-h_K^T h_J, sigma^2]`` (E2E). ``cavity_skip`` and ``cavity_gate`` (False, False):
    this library's readout variants, see :meth:`_cavity_logits`; in float32 they need
    ``v_min >= 1e-9`` (5e-7, the legacy value, as the shipped files use). A file whose
    config lacks an option of :attr:`LEGACY_STRUCTURE` was trained with its value there.
    """

    name = "gepnet"
    _options = ("iterations", "rounds", "damping", "readout", "node_size", "message_hidden",
                "gru_size", "readout_hidden", "lam0", "v_min", "min_noise_var", "cavity_skip",
                "cavity_gate", "message_out_act", "readout_act", "node_sign", "loss")
    LEGACY_STRUCTURE = {**LEGACY_MPNN, "node_sign": 1.0, "lam0": 1.0, "v_min": 5e-7}

    def __init__(self, constellation, *, iterations: int = 10, rounds: int = 2, damping: float = 0.7,
                 readout: str = "pam", node_size: int = 8, message_hidden=(64, 32), gru_size: int = 64,
                 readout_hidden=(64, 32), lam0: Optional[float] = None, v_min: float = 1e-13,
                 min_noise_var: float = 1e-6, cavity_skip: bool = False, cavity_gate: bool = False,
                 message_out_act: str = "relu", readout_act: str = "none", node_sign: float = -1.0,
                 loss: str = "all", **kw):
        super().__init__(constellation, **kw)
        if loss not in LOSSES:
            raise ValueError(f"{self.name}: loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        if readout not in READOUTS:
            raise ValueError(f"gepnet: readout must be one of {READOUTS}, got {readout!r}")
        if readout == "pam":
            pam_levels(self)
        self.iterations = _check_positive_int("iterations", self.name, iterations)
        self.rounds = _check_positive_int("rounds", self.name, rounds)
        if not 0.0 <= damping < 1.0:
            raise ValueError(f"gepnet: damping must be in [0, 1), got {damping!r}")
        if lam0 is None:
            lam0 = prior_precision(self.constellation)
        if not (isinstance(lam0, (int, float)) and not isinstance(lam0, bool) and lam0 > 0):
            raise ValueError(f"{self.name}: lam0 must be None (1 / E[x_K^2]) or a positive float, got {lam0!r}")
        if not (isinstance(v_min, (int, float)) and not isinstance(v_min, bool) and v_min > 0):
            raise ValueError(f"{self.name}: v_min must be a positive float, got {v_min!r}")
        self.damping, self.readout, self.lam0 = float(damping), readout, float(lam0)
        self.v_min, self.min_noise_var = float(v_min), float(min_noise_var)
        self._structure(message_out_act, readout_act, node_sign)
        self.node_size, self.gru_size = node_size, gru_size
        self.message_hidden = check_sizes("message_hidden", message_hidden, 2)
        self.readout_hidden = check_sizes("readout_hidden", readout_hidden, 2)
        c = self.constellation
        out = c.real_levels.numel() if readout == "pam" else c.order
        self.mpnn = self._mpnn(readout_out=out, attr_features=2, node_size=node_size,
                               message_hidden=message_hidden, gru_size=gru_size,
                               readout_hidden=readout_hidden, rounds=rounds,
                               readout_in=node_size if readout == "pam" else 2 * node_size)
        if not isinstance(cavity_skip, bool):
            raise TypeError(f"gepnet: cavity_skip must be a bool, got {cavity_skip!r}")
        self.cavity_skip = cavity_skip
        if cavity_skip:
            # Start as classical EP: the readout's last layer is zero, so the logits are the
            # Gaussian cavity's alone until training moves them (see _cavity_logits).
            last = self.mpnn.readout_mlp.layers[-1]
            torch.nn.init.zeros_(last.weight)
            torch.nn.init.zeros_(last.bias)
        if not isinstance(cavity_gate, bool):
            raise TypeError(f"gepnet: cavity_gate must be a bool, got {cavity_gate!r}")
        if cavity_gate and not cavity_skip:
            raise ValueError("gepnet: cavity_gate tempers the Gaussian cavity term of cavity_skip; "
                             "pass cavity_skip=True with it")
        self.cavity_gate = cavity_gate
        if cavity_gate:
            # tau = 2 sigmoid(w u + b) per real node, in (0, 2); w = b = 0 gives tau = 1 exactly,
            # so the model starts as the one without the gate and a cavity_skip file seeds it.
            self.gate = torch.nn.Linear(node_size, 1)
            torch.nn.init.zeros_(self.gate.weight)
            torch.nn.init.zeros_(self.gate.bias)

    def init_optional(self) -> tuple:
        """The gate starts as the identity: a ``cavity_skip`` model's file seeds this one exactly."""
        return ("gate.weight", "gate.bias") if self.cavity_gate else ()

    # --- the readout and (8) --------------------------------------------------------
    def _read(self, u: Tensor, Nt: int):
        """Readout logits: ``(B, 2Nt, L)`` (pam) or ``(B, Nt, Q)`` (complex)."""
        if self.readout == "pam":
            return self.mpnn.readout(u)
        return self.mpnn.readout(torch.cat([u[:, :Nt], u[:, Nt:]], -1))

    def _refine(self, u, g, edge, attr, node_mask, Nt: int):
        """The GNN step: L rounds (E2E 1-2) from the cavity ``attr = [x_obs, v_obs]``, then
        the readout (3a). Returns ``(u, g, logits)``."""
        u, g = self.mpnn(u, g, edge, attr, node_mask)
        lg = self._read(u, Nt)
        if not self.cavity_skip:
            return u, g, lg
        if self.cavity_gate:
            # tau * (Gaussian log-likelihood) = the log-likelihood with variance v_obs / tau
            tau = 2 * torch.sigmoid(self.gate(u))[..., 0]
            attr = torch.stack([attr[..., 0], attr[..., 1] / tau], -1)
        return u, g, lg + self._cavity_logits(attr, Nt)

    def _cavity_logits(self, attr: Tensor, Nt: int) -> Tensor:
        """``cavity_skip`` (an option of this library, not of the papers): the readout is
        a correction added to the Gaussian cavity's own log-likelihood
        ``-(s - x_obs)^2 / (2 v_obs)`` over the alphabet (per real node for ``"pam"``; the sum
        over a user's two real nodes for ``"complex"``), with the correction's last layer
        starting at zero. The model then starts as classical EP and training only has to
        learn what the Gaussian cavity gets wrong: with the CPU budget of the shipped
        weights, the paper's plain readout had not caught up with EP.

        ``cavity_gate`` (also this library's) multiplies the Gaussian term by a per-node
        ``tau = 2 sigmoid(w^T u + b)`` in (0, 2), exactly 1 at the start (w = b = 0). Why:
        at 25 dB, where EP's final decision is wrong, the Gaussian term favours the wrong
        level by a median of 37-87 nats while a cavity_skip model's correction spans at most
        ~4 (measured), so an additive correction cannot overturn a confidently wrong cavity;
        the gate lets the GNN distrust it (tau -> 0) and decide from its own readout."""
        x, v = attr[..., 0], attr[..., 1]
        c = self.constellation
        if self.readout == "pam":
            lv = c.real_levels.to(dtype=attr.dtype, device=attr.device)
            return -(lv - x[..., None]).square() / (2 * v[..., None])
        pts = c.points_as(complex_dtype(attr.dtype), attr.device)
        re = -(pts.real - x[:, :Nt, None]).square() / (2 * v[:, :Nt, None])
        im = -(pts.imag - x[:, Nt:, None]).square() / (2 * v[:, Nt:, None])
        return re + im

    def _points(self, dtype, device) -> Tensor:
        """The constellation's points (E2E: its transmitter's learned ones, with gradients)."""
        return self.constellation.points_as(dtype, device)

    def _node_posterior(self, lg: Tensor, Nt: int):
        """The readout as (8) reads it: per real node ``(B, 2Nt, L)`` logits over its
        ``(2Nt, L)`` levels. ``"complex"``: user k's distribution over the Q points serves
        both its nodes, over the real parts (node k) and the imaginary parts (node k + Nt)."""
        if self.readout == "pam":
            lv = self.constellation.real_levels.to(dtype=lg.dtype, device=lg.device)
            return lg, lv.expand(2 * Nt, lv.numel())
        pts = self._points(complex_dtype(lg.dtype), lg.device)
        Q = pts.numel()
        levels = torch.cat([pts.real.expand(Nt, Q), pts.imag.expand(Nt, Q)], 0)
        return torch.cat([lg, lg], 1), levels

    # --- the iterations ---------------------------------------------------------------
    def _run(self, y, H, noise_var, mask) -> list:
        """Readout logits of every iteration (the last one is the detector's output)."""
        self._check_params(H)
        B, _, Nt = H.shape
        real = real_dtype(H.dtype)
        if self.cavity_skip and real == torch.float32 and self.v_min < V_MIN_FLOAT32_CAVITY:
            raise ValueError(
                f"{self.name}: cavity_skip in float32 needs v_min >= {V_MIN_FLOAT32_CAVITY:g} (got {self.v_min:g}): "
                "the Gaussian cavity term drives lam up to 1 / v_min and the float32 LMMSE step then loses "
                "all precision (non-finite values); pass v_min=5e-7 (the legacy value) or run in float64")
        s2 = self._floor(noise_var / 2)                                  # real noise variance
        gram, rhs, f, edge, node_mask = real_graph(H, y, mask, s2, -1.0, self.node_sign)
        # Masked real nodes: diagonal 1 keeps A = gram + diag(lam) well conditioned and the
        # cavity (7) finite, v_obs = s2 (their rows and columns are otherwise zero).
        absent = (~node_mask).to(real)
        gram = (gram + torch.diag_embed(absent)) / s2[:, None, None]
        rhs = rhs / s2[:, None]
        absent_node = ~node_mask
        lam0 = torch.full((B, 2 * Nt), self.lam0, dtype=real, device=H.device)
        lam, gam = lam0, torch.zeros_like(lam0)
        u, g = self.mpnn.encode(f, node_mask)                            # E2E (11)
        outs = []
        for t in range(self.iterations):
            x_obs, v_obs = ops.ep_cavity(gram, rhs, lam, gam, v_min=self.v_min, backend=self.backend)  # (6)-(7)
            u, g, lg = self._refine(u, g, edge, torch.stack([x_obs, v_obs], -1), node_mask, Nt)
            outs.append(lg)
            if t == self.iterations - 1:
                break
            z, levels = self._node_posterior(lg, Nt)
            # (8)-(10); absent nodes keep their (lam, gam)
            lam, gam = ops.ep_update(x_obs, v_obs, lam, gam, levels, logits=z, keep=absent_node,
                                     damping=self.damping, v_min=self.v_min, backend=self.backend)
        return outs

    def _log_probs(self, lg: Tensor) -> Tensor:
        lp = lg.log_softmax(-1)
        return qam_log_probs(lp, self) if self.readout == "pam" else lp

    def _detect_masked(self, y, H, noise_var, mask):
        return self._log_probs(self._run(y, H, noise_var, mask)[-1]), None

    def training_loss(self, y, H, noise_var, x_idx, mask: Optional[Tensor] = None) -> Tensor:
        """Cross-entropy of every iteration's readout averaged over the iterations
        (``loss="all"``), or of the last iteration's alone (``"final"``)."""
        noise_var, mask = self.checked(y, H, noise_var, mask)
        x_idx = valid_indices(x_idx, mask, self)
        if self.readout == "pam":
            target, valid = pam_targets(x_idx, self), torch.cat([mask, mask], 1)
        else:
            target, valid = x_idx, mask
        outs = self._run(y, H, noise_var, mask)
        if self.loss == "final":
            return masked_cross_entropy(outs[-1], target, valid)
        return sum(masked_cross_entropy(lg, target, valid) for lg in outs) / len(outs)


__all__ = ["GEPNet", "READOUTS", "LOSSES", "prior_precision"]
