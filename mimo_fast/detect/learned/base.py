"""What every learned detector shares: its configuration, its training loss, native user
masks, and weight files.

A learned detector is a :class:`~mimo_fast.detect.base.Detector` whose constructor takes
only JSON-serialisable keyword options (its *config*), so ``type(det)(constellation,
nr=..., nt=..., **det.config())`` rebuilds it; the weights file stores that config next
to the parameters (see :mod:`mimo_fast.detect.learned.weights`).

Masks: the base class removes masked users by re-solving each distinct mask pattern;
learned detectors instead take the mask natively (``_detect_masked``), so one batch can
mix numbers of users and the computation is the same as for a smaller problem. The
contract both paths keep: a masked user gets uniform logits and hard 0, and changes
nothing for the others.

Legacy structure: when an option that changes what the network computes gets a new
default (the GNN detectors' switch to the authors' published structure, docs/fidelity.md),
files written before the option existed were trained with the old behaviour, and their
saved config lacks the option. Each class lists those options with their old values in
``LEGACY_STRUCTURE``; :func:`with_legacy` fills them into a saved config, and both
loaders (weights files and training checkpoints) use it, so old files keep their numbers
while new ones record every option they were trained with.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mimo_fast.detect.base import Detector
from mimo_fast.ops import validate


class LearnedDetector(Detector):
    """Base class of the trainable detectors.

    Subclasses set ``name`` (the ``detect.make``/CLI name) and implement

    * ``_detect_masked(y, H, noise_var, mask) -> (logits, hard_or_None)`` with ``mask``
      ``(B, Nt)`` bool (all True when the caller gave none);
    * ``training_loss(y, H, noise_var, x_idx, mask) -> Tensor`` (scalar): the paper's loss
      given the transmitted point indices ``x_idx (B, Nt)`` (masked entries arbitrary);
    * ``config() -> dict``: the constructor options that rebuild this model.
    """

    name = "learned"

    #: options whose default changed after files were shipped, with the value a file that
    #: lacks them was trained with (see the module docstring and :func:`with_legacy`)
    LEGACY_STRUCTURE: dict = {}

    def config(self) -> dict:
        raise NotImplementedError

    def training_loss(self, y: Tensor, H: Tensor, noise_var: Tensor, x_idx: Tensor,
                      mask: Optional[Tensor] = None) -> Tensor:
        raise NotImplementedError

    def _detect_masked(self, y: Tensor, H: Tensor, noise_var: Tensor, mask: Tensor):
        raise NotImplementedError

    @property
    def constellation_request(self) -> str:
        """The ``--mod`` this model answers to (``detect.make``, ``train --init``): its
        constellation's name, except for models that learn their own (e2e)."""
        return self.constellation.name

    def init_optional(self) -> tuple:
        """Names of parameters that start as the identity, so a weights file that lacks them
        still seeds this model exactly (``mimo-fast train --init``). None by default."""
        return ()

    def retransmit(self, y: Tensor, H: Tensor, x_idx: Tensor, mask: Tensor) -> Tensor:
        """The received signal of a training draw (made with the QAM of ``--mod``) as this
        model's own transmitter would send it: ``y`` itself, except for models that learn
        their constellation (``e2e``)."""
        return y

    # The unmasked path is the masked one with every user present.
    def _detect(self, y, H, noise_var):
        mask = torch.ones(H.shape[0], H.shape[2], dtype=torch.bool, device=H.device)
        return self._detect_masked(y, H, noise_var, mask)

    def _masked(self, y, H, nv, mask):
        logits, hard = self._detect_masked(y, H, nv, mask)
        logits = logits.masked_fill(~mask[..., None], 0.0)
        if hard is None:
            hard = logits.argmax(-1)
        return logits, hard.masked_fill(~mask, 0)

    def checked(self, y, H, noise_var, mask=None):
        """Validate like ``forward`` and return ``(noise_var (B,), mask (B, Nt))``: for
        training code that calls ``training_loss`` directly."""
        nv = self._check(y, H, noise_var, mask)
        if mask is None:
            mask = torch.ones(H.shape[0], H.shape[2], dtype=torch.bool, device=H.device)
        return nv, mask


def with_legacy(cls, saved):
    """``saved`` (a config read from a weights file or checkpoint) with every option of
    ``cls.LEGACY_STRUCTURE`` it lacks set to its legacy value; other values untouched.
    ``saved`` itself is not modified; a non-dict is returned as it is."""
    if not isinstance(saved, dict):
        return saved
    legacy = getattr(cls, "LEGACY_STRUCTURE", None) or {}
    return {**legacy, **saved}


__all__ = ["LearnedDetector", "validate", "with_legacy"]
