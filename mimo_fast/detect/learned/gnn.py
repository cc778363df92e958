"""``gnn``: the plain GNN detector on the pairwise MRF (Scotti et al.; the baseline "GNN"
of the AMP-GNN and GEPNet papers), and what the three GNN detectors share.

The real-equivalent model (E2E eq. 5) ``y_r = H_r x_r + n`` has one graph node per real
symbol ``x_K``, ``K = 1..2Nt`` (the real parts of the users, then the imaginary parts).
Its pairwise MRF (AMP-GNN eq. 11) has self potentials in ``y_r^T h_K`` and ``h_K^T h_K``
and pair potentials in ``h_K^T h_J``, so the graph inputs are

    node features  f_K  = [y_r^T h_K, c * h_K^T h_K, sigma^2]      (AMP-GNN 14, E2E 11)
    edge attribute e_KJ = [s * h_K^T h_J, sigma^2],  s = -1 (E2E), +1 (AMP-GNN f_jn)

all read off one real Gram product (:func:`mimo_fast.detect.iterative._real_gram`); the
node sign ``c`` (option ``node_sign``) is -1 in the GEPNet and GNN-detector authors' code
(the self potential's ``-h_K^T h_K / 2``), +1 in the papers' text and in the shipped files.
The plain detector runs ``rounds`` rounds of the :class:`~mimo_fast.nn.MPNN` and reads a
PAM distribution per real node; a QAM point's logit is the sum of its real and imaginary
levels' log-probabilities. Its defaults are the authors' code (Scotti et al.; see
docs/fidelity.md): ReLU after the message MLP's last layer, GRU input the message sum
only, affine readout, sizes message (128, 64), GRU 128, readout (128, 64).

Masks: a masked user's two real nodes are absent from the MPNN (send nothing, state held
at zero) and its column of H is zeroed before the Gram product.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mimo_fast.detect.base import real_dtype
from mimo_fast.detect.iterative import _real_gram
from mimo_fast.detect.learned.base import LearnedDetector
from mimo_fast.nn import MPNN
from mimo_fast.nn.mlp import check_act, check_sizes


# --- graph inputs -------------------------------------------------------------------
def real_graph(H: Tensor, y: Tensor, mask: Tensor, sigma2: Tensor, edge_sign: float,
               node_sign: float = 1.0):
    """Real-equivalent Gram matrix and graph inputs with masked users removed.

    Returns ``(gram (B, 2Nt, 2Nt) = H_r^T H_r, rhs (B, 2Nt) = H_r^T y_r, features
    (B, 2Nt, 3) = [rhs, node_sign * diag(gram), sigma2], edge (B, 2Nt, 2Nt, 2) =
    [edge_sign * gram, sigma2], node_mask (B, 2Nt))``; ``sigma2 (B,)`` is the noise
    variance the features carry.
    """
    B, _, Nt = H.shape
    K = 2 * Nt
    H = H * mask[:, None, :].to(H.dtype)                     # masked users: zero columns
    gram, rhs = _real_gram(H, y, torch.ones_like(sigma2))
    s = sigma2[:, None].expand(B, K)
    diag = gram.diagonal(dim1=-2, dim2=-1)
    features = torch.stack([rhs, diag if node_sign == 1.0 else node_sign * diag, s], -1)
    edge = torch.stack([edge_sign * gram, sigma2[:, None, None].expand(B, K, K)], -1)
    return gram, rhs, features, edge, torch.cat([mask, mask], 1)


# --- PAM alphabet of the real nodes ---------------------------------------------------
def pam_levels(det) -> None:
    """Check that ``det.constellation`` splits into one PAM alphabet shared by the real
    and imaginary parts (QAM), which a per-real-node readout needs."""
    c = det.constellation
    if not c.separable or not torch.equal(c.real_levels, c.imag_levels):
        raise ValueError(f"{det.name}: constellation must be QAM-like (the same PAM levels on the real and "
                         f"imaginary axes) for a per-real-node PAM readout, got {c!r}")


def qam_log_probs(pam_lp: Tensor, det) -> Tensor:
    """``(B, 2Nt, L)`` PAM log-probabilities of the real nodes -> ``(B, Nt, Q)`` point
    log-probabilities ``log p(Re s) + log p(Im s)``."""
    c, Nt = det.constellation, pam_lp.shape[1] // 2
    ri, ii = c.real_index.to(pam_lp.device), c.imag_index.to(pam_lp.device)
    return pam_lp[:, :Nt][..., ri] + pam_lp[:, Nt:][..., ii]


def pam_targets(x_idx: Tensor, det) -> Tensor:
    """Point indices ``(B, Nt)`` -> PAM level indices of the real nodes ``(B, 2Nt)``."""
    c = det.constellation
    return torch.cat([c.real_index.to(x_idx.device)[x_idx], c.imag_index.to(x_idx.device)[x_idx]], 1)


def valid_indices(x_idx: Tensor, mask: Tensor, det) -> Tensor:
    """Check the transmitted point indices ``x_idx (B, Nt)`` of ``training_loss`` and set
    the masked (arbitrary) entries to 0 so they index nothing out of range."""
    if not isinstance(x_idx, Tensor) or x_idx.dtype != torch.int64 or x_idx.shape != mask.shape:
        raise ValueError(f"{det.name}: x_idx must be an int64 tensor of shape {tuple(mask.shape)}")
    x_idx = torch.where(mask, x_idx, torch.zeros((), dtype=x_idx.dtype, device=x_idx.device))
    Q = det.constellation.order
    if bool(((x_idx < 0) | (x_idx >= Q)).any()):
        raise ValueError(f"{det.name}: x_idx must hold point indices in [0, {Q}) for the present users")
    return x_idx


def moments(p: Tensor, levels: Tensor):
    """Mean and variance of a discrete distribution ``p (..., L)`` over ``levels (L,)`` or
    ``(..., L)`` (E2E eq. 8 with the GNN's probabilities as ``q``)."""
    x_hat = (p * levels).sum(-1)
    v_hat = (p * (levels - x_hat[..., None]).square()).sum(-1)
    return x_hat, v_hat


def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy over the entries where ``mask`` is True."""
    ce = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none")
    m = mask.flatten().to(ce.dtype)
    return (ce * m).sum() / m.sum().clamp_min(1.0)


# --- shared base ------------------------------------------------------------------------
#: the structure options of the GNN detectors before the authors' code became the default
#: (what the shipped gnn/gepnet/e2e/ampgnn files were trained with; docs/fidelity.md)
LEGACY_MPNN = {"message_out_act": "none", "readout_act": "relu"}


class GraphDetector(LearnedDetector):
    """What gnn, gepnet and ampgnn share: the MPNN options, ``config()`` and the check
    that the inputs match the parameters' dtype and device."""

    #: constructor options (besides constellation, nr, nt, backend) of the subclass
    _options: tuple = ()

    def _structure(self, message_out_act, readout_act, node_sign=None) -> None:
        """Check and set the structure options shared by the GNN detectors."""
        self.message_out_act = check_act(f"{self.name}: message_out_act", message_out_act)
        self.readout_act = check_act(f"{self.name}: readout_act", readout_act)
        if node_sign is not None:
            if isinstance(node_sign, bool) or node_sign not in (1, -1):
                raise ValueError(f"{self.name}: node_sign must be +1 or -1, got {node_sign!r}")
            self.node_sign = float(node_sign)

    def _mpnn(self, *, readout_out, attr_features, node_size, message_hidden, gru_size,
              readout_hidden, rounds, readout_in=None) -> MPNN:
        return MPNN(readout_out=readout_out, in_features=3, edge_features=2,
                    attr_features=attr_features, node_size=node_size,
                    message_hidden=check_sizes("message_hidden", message_hidden, 2),
                    gru_size=gru_size, readout_hidden=check_sizes("readout_hidden", readout_hidden, 2),
                    readout_in=readout_in, rounds=rounds, message_out_act=self.message_out_act,
                    readout_act=self.readout_act, backend=self.backend)

    def config(self) -> dict:
        out = {}
        for k in self._options:
            v = getattr(self, k)
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def _check_params(self, H: Tensor) -> None:
        w = self.mpnn.encoder.weight
        if real_dtype(H.dtype) != w.dtype or H.device != w.device:
            raise TypeError(f"{self.name}: H is {H.dtype} on {H.device} but the model's parameters are "
                            f"{w.dtype} on {w.device}; convert one (e.g. det.double() for complex128 inputs)")

    def _floor(self, noise_var: Tensor) -> Tensor:
        return noise_var.clamp_min(self.min_noise_var)


def _check_positive_int(name: str, det: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{det}: {name} must be a positive int, got {v!r}")
    return v


class GNN(GraphDetector):
    """Plain GNN detector on the pairwise MRF (Scotti et al.), real nodes, PAM readout.

    ``u^(0) = W_1 f_K + b_1``; ``rounds`` rounds of the MPNN; ``p_K = softmax(R(u_K))``
    over the PAM levels. Loss: cross-entropy of the real nodes' levels. Options:
    ``rounds`` (10), ``node_size`` (8), ``message_hidden`` ((128, 64)), ``gru_size`` (128),
    ``readout_hidden`` ((128, 64)), ``edge_sign`` (-1: the pair potential's
    ``-h_K^T h_J``), ``min_noise_var`` (1e-6), and the structure options whose defaults
    are the authors' code: ``message_out_act`` (``"relu"``: ReLU after the message MLP's
    last layer), ``readout_act`` (``"none"``: affine readout), ``node_sign`` (-1: the node
    feature ``-h_K^T h_K``), ``gru_attr`` (False: the GRU reads the message sum only;
    True adds the node features as attribute). A file whose config lacks them was trained
    with :attr:`LEGACY_STRUCTURE`. The features carry the real-model noise variance (half
    the complex one).
    """

    name = "gnn"
    needs_separable = True
    _options = ("rounds", "node_size", "message_hidden", "gru_size", "readout_hidden",
                "edge_sign", "min_noise_var", "message_out_act", "readout_act", "node_sign", "gru_attr")
    LEGACY_STRUCTURE = {**LEGACY_MPNN, "node_sign": 1.0, "gru_attr": True}

    def __init__(self, constellation, *, rounds: int = 10, node_size: int = 8,
                 message_hidden=(128, 64), gru_size: int = 128, readout_hidden=(128, 64),
                 edge_sign: float = -1.0, min_noise_var: float = 1e-6, message_out_act: str = "relu",
                 readout_act: str = "none", node_sign: float = -1.0, gru_attr: bool = False, **kw):
        super().__init__(constellation, **kw)
        pam_levels(self)
        self.rounds = _check_positive_int("rounds", self.name, rounds)
        self.node_size, self.gru_size = node_size, gru_size
        self.message_hidden = check_sizes("message_hidden", message_hidden, 2)
        self.readout_hidden = check_sizes("readout_hidden", readout_hidden, 2)
        self.edge_sign, self.min_noise_var = float(edge_sign), float(min_noise_var)
        self._structure(message_out_act, readout_act, node_sign)
        if not isinstance(gru_attr, bool):
            raise TypeError(f"gnn: gru_attr must be a bool, got {gru_attr!r}")
        self.gru_attr = gru_attr
        L = self.constellation.real_levels.numel()
        self.mpnn = self._mpnn(readout_out=L, attr_features=3 if gru_attr else 0, node_size=node_size,
                               message_hidden=message_hidden, gru_size=gru_size,
                               readout_hidden=readout_hidden, rounds=rounds)

    def _pam_logits(self, y, H, noise_var, mask) -> tuple:
        self._check_params(H)
        s2 = self._floor(noise_var / 2)                                   # real noise variance
        _, _, f, edge, node_mask = real_graph(H, y, mask, s2, self.edge_sign, self.node_sign)
        u, g = self.mpnn.encode(f, node_mask)                             # (14)
        u, g = self.mpnn(u, g, edge, f if self.gru_attr else None, node_mask)   # (15)-(17)
        return self.mpnn.readout(u), node_mask                            # (18)

    def _detect_masked(self, y, H, noise_var, mask):
        lg, _ = self._pam_logits(y, H, noise_var, mask)
        return qam_log_probs(lg.log_softmax(-1), self), None

    def training_loss(self, y, H, noise_var, x_idx, mask: Optional[Tensor] = None) -> Tensor:
        noise_var, mask = self.checked(y, H, noise_var, mask)
        x_idx = valid_indices(x_idx, mask, self)
        lg, node_mask = self._pam_logits(y, H, noise_var, mask)
        return masked_cross_entropy(lg, pam_targets(x_idx, self), node_mask)


__all__ = ["GNN", "GraphDetector", "LEGACY_MPNN", "real_graph", "pam_levels", "qam_log_probs", "pam_targets",
           "valid_indices", "moments", "masked_cross_entropy"]
