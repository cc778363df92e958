"""``e2e``: end-to-end learning of the modulator and the detector (Chang et al., "Graph
neural network-based end-to-end learning for multi-user MIMO systems").

Transmitter: GNN-tx (:class:`~mimo_fast.detect.learned.gnn_tx.GNNTx`, Section IV-A) turns an initial
QAM into ``M`` learned points ``a_hat_m`` of unit average power; user ``k`` sends
``x_k = a_hat_{s_k}``. Receiver: GNN-rx (Section IV-B), the GNN-aided EP of
:class:`~mimo_fast.detect.learned.gepnet.GEPNet` with the complex readout: each of the
``T`` iterations refines the cavity (7) with the GNN, reads user ``k``'s message
distribution ``s_hat_k`` from its two real nodes ``[u_k, u_{k+Nt}]`` (eq. 3 over the
``M`` messages) and forms the posterior (8) on the learned points,

    x_hat_K = sum_m Re(a_hat_m) s_hat_{k,m}   (K = k),   Im(a_hat_m) for K = k + Nt    (8a)
    v_hat_K = sum_m (Re(a_hat_m) - x_hat_K)^2 s_hat_{k,m}  (resp. Im)                    (8b)

Loss (eq. 12): ``-1/BS sum_bs sum_k log s_hat^{(T)}_{k, s_k}``, the cross-entropy of the
*last* iteration's readout (present users only); GNN-tx and GNN-rx are trained together.

Training on the library's data (:mod:`mimo_fast.train.data`, drawn with the QAM of
``--mod``): ``training_loss`` rebuilds the received signal of the same draw with the
learned points, ``n = y - H x_qam``, ``y' = H x_learned + n``; the learned points have
unit average power, so the draw's noise variance (its SNR) stays right.

After training the learned points are an ordinary :class:`~mimo_fast.comm.Constellation`
(``det.constellation``, name ``"e2e-qam16"``), saved in the weights file's metadata: other
detectors (ML, LMMSE, ...) can take it, and inference (Section V) uses it directly
without running GNN-tx. ``det.constellation`` follows GNN-tx's parameters: it is refreshed
on ``eval()``, on ``state_dict()`` in training mode (so every saved file holds the points
of its parameters) and after ``load_state_dict``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mimo_fast.comm import as_constellation, from_name
from mimo_fast.detect.learned.gepnet import GEPNet
from mimo_fast.detect.learned.gnn import masked_cross_entropy, valid_indices
from mimo_fast.detect.learned.gnn_tx import GNNTx
from mimo_fast.nn.mlp import check_sizes

#: the paper's sizes (Section VI-A): N_p1, N_p2 = 128, 64; N_u1 = 128; N_r1 = N_r2 = 256;
#: L = 2; eta = 0.7; T = 10; S_u^rx = 8. They are the constructor's defaults.
PAPER = dict(message_hidden=(128, 64), gru_size=128, readout_hidden=(256, 256), rounds=2, damping=0.7,
             iterations=10, node_size=8, tx_message_hidden=(128, 64), tx_gru_size=128, tx_rounds=2)


class E2E(GEPNet):
    """GNN-tx + GNN-rx, trained jointly (see the module docstring).

    ``constellation``: the initial QAM for a new model (``"qam16"``), or the learned
    constellation when rebuilding a saved one (then ``init`` names the QAM it started
    from). Options: those of :class:`GEPNet` except ``readout`` (always ``"complex"``),
    with the paper's sizes as defaults (:data:`PAPER`) and GEPNet's structure defaults
    (the authors' code: ``message_out_act="relu"``, ``readout_act="none"``,
    ``node_sign=-1``, ``lam0`` = 1 / E[x_K^2] of the initial QAM = 2, ``v_min=1e-13``; a
    file whose config lacks them was trained with ``GEPNet.LEGACY_STRUCTURE``, as both
    shipped e2e files were); ``init`` (the initial QAM's name,
    default: ``constellation``'s); ``tx_message_hidden`` (N_p1, N_p2 of GNN-tx),
    ``tx_gru_size`` (N_u1 of GNN-tx), ``tx_rounds`` (L of GNN-tx), ``tx_residual`` and
    ``tx_residual_scale`` (GNN-tx starts as the initial QAM and moves by a scaled
    displacement; this library's options, see :mod:`mimo_fast.detect.learned.gnn_tx`).
    """

    name = "e2e"
    #: simulations transmit with ``det.constellation`` (mimo_fast.eval.transmit_constellations)
    transmits_own_constellation = True
    _options = tuple(o for o in GEPNet._options if o not in ("readout", "loss")) + (
        "init", "tx_message_hidden", "tx_gru_size", "tx_rounds", "tx_residual", "tx_residual_scale")

    def __init__(self, constellation, *, init: Optional[str] = None, tx_message_hidden=(128, 64),
                 tx_gru_size: int = 128, tx_rounds: int = 2, tx_residual: bool = False,
                 tx_residual_scale: float = 0.05,
                 message_hidden=(128, 64), gru_size: int = 128, readout_hidden=(256, 256), **kw):
        if "readout" in kw:
            raise ValueError("e2e: the readout is always the complex one of GNN-rx (eq. 3); "
                             "do not pass readout")
        if "loss" in kw:
            raise ValueError("e2e: the loss is always eq. (12), the last iteration's cross-entropy; "
                             "do not pass loss")
        given = as_constellation(constellation)
        if init is None:
            init = given.name
        if not isinstance(init, str):
            raise TypeError(f"e2e: init must be the name of a QAM (e.g. 'qam16'), got {init!r}")
        try:
            start = from_name(init)
        except ValueError:
            raise ValueError(f"e2e: init must name the QAM the modulator starts from (qam4, qam16, ...), "
                             f"got {init!r}; pass init= when the constellation is a learned one") from None
        if given.order != start.order:
            raise ValueError(f"e2e: constellation has {given.order} points but init {init!r} has {start.order}")
        super().__init__(given, readout="complex", message_hidden=message_hidden, gru_size=gru_size,
                         readout_hidden=readout_hidden, **kw)
        self.init = start.name
        self.tx_message_hidden = check_sizes("tx_message_hidden", tx_message_hidden, 2)
        self.tx_gru_size, self.tx_rounds, self.tx_residual = tx_gru_size, tx_rounds, tx_residual
        self.tx = GNNTx(start, message_hidden=self.tx_message_hidden, gru_size=tx_gru_size, rounds=tx_rounds,
                        residual=tx_residual, residual_scale=tx_residual_scale, backend=self.backend)
        self.tx_residual_scale = self.tx.residual_scale
        self._live: Optional[Tensor] = None       # GNN-tx's points during training_loss
        if torch.allclose(given.points, start.points, atol=1e-9):
            self.refresh_constellation()          # a new model: the points GNN-tx gives now

    # --- the learned constellation ------------------------------------------------------
    @property
    def constellation_request(self) -> str:
        """The ``--mod`` this model answers to (``detect.make``): the QAM it was initialised from."""
        return self.init

    def refresh_constellation(self) -> None:
        """``det.constellation`` <- GNN-tx's current points (an ordinary Constellation)."""
        self.constellation = self.tx.constellation()

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode:
            self.refresh_constellation()
        return self

    def state_dict(self, *args, **kwargs):
        if self.training:
            self.refresh_constellation()
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.refresh_constellation()
        return out

    # --- GEPNet's pieces that read the points: the learned ones --------------------------
    def _points(self, dtype, device) -> Tensor:
        if self._live is not None:
            return self._live.to(dtype=dtype, device=device)
        return self.constellation.points_as(dtype, device)

    def _cavity_logits(self, attr: Tensor, Nt: int) -> Tensor:
        """``cavity_skip``: the Gaussian cavity's log-likelihood of each learned point."""
        x, v = attr[..., 0], attr[..., 1]
        pts = self._points(attr.dtype.to_complex(), attr.device)
        re = -(pts.real - x[:, :Nt, None]).square() / (2 * v[:, :Nt, None])
        im = -(pts.imag - x[:, Nt:, None]).square() / (2 * v[:, Nt:, None])
        return re + im

    # --- training ----------------------------------------------------------------------
    def retransmit(self, y: Tensor, H: Tensor, x_idx: Tensor, mask: Tensor,
                   points: Optional[Tensor] = None) -> Tensor:
        """The received signal of a draw made with the initial QAM, re-sent with ``points``
        (default: ``det.constellation``): ``y - H x_qam + H x_learned``, i.e. ``H x_learned + n``.
        ``x_idx`` (0 where masked) are the messages, masked users send nothing."""
        m = mask.to(H.dtype)
        new = self.constellation.points_as(H.dtype, H.device) if points is None else points.to(H.dtype)
        qam = from_name(self.init).points_as(H.dtype, H.device)
        dx = (new[x_idx] - qam[x_idx]) * m
        return y + (H @ dx[..., None])[..., 0]

    def training_loss(self, y, H, noise_var, x_idx, mask: Optional[Tensor] = None) -> Tensor:
        """Eq. (12) on the draw ``(y, H, x_idx)`` made with the initial QAM, re-transmitted
        with GNN-tx's points (module docstring)."""
        noise_var, mask = self.checked(y, H, noise_var, mask)
        x_idx = valid_indices(x_idx, mask, self)
        self._check_params(H)
        pts = self.tx()                                                   # (M,), with gradients
        y_new = self.retransmit(y, H, x_idx, mask, pts)                   # H x_learned + n
        self._live = pts
        try:
            outs = self._run(y_new, H, noise_var, mask)
        finally:
            self._live = None
        return masked_cross_entropy(outs[-1], x_idx, mask)                # (12)


def plot_constellation(constellation, path, reference="qam16", title: str = "") -> None:
    """PNG of ``constellation``'s points (red, labelled by message index) against
    ``reference``'s (black), as the paper's Fig. 3."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'mimo-fast[sim]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, ref = as_constellation(constellation), as_constellation(reference)
    fig, ax = plt.subplots(figsize=(5, 5))
    for pts, color, name in ((ref.points, "k", ref.name), (c.points, "r", c.name)):
        ax.scatter(pts.real, pts.imag, s=60, facecolors="none", edgecolors=color, label=name)
        for i, p in enumerate(pts.tolist()):
            ax.annotate(str(i), (p.real, p.imag), textcoords="offset points", xytext=(4, 4), color=color, fontsize=7)
    ax.axhline(0, color="0.8", lw=0.5)
    ax.axvline(0, color="0.8", lw=0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("Re")
    ax.set_ylabel("Im")
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["E2E", "PAPER", "plot_constellation"]
