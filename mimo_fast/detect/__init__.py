"""Detectors: ``make(name, constellation, *, nr=None, nt=None, weights=None, **options)``.

Every detector is an ``nn.Module`` called as ``det(y, H, noise_var, mask=None)`` and
returns a :class:`DetectorOutput` (``.logits``, ``.hard``, ``.llr(method)``). See
:mod:`mimo_fast.detect.base` for the conventions.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mimo_fast.comm import as_constellation
from mimo_fast.detect.base import Detector, DetectorOutput, bit_llrs
from mimo_fast.detect.iterative import AMP, EP, OAMP
from mimo_fast.detect.learned import weights as _weights
from mimo_fast.detect.learned.ampgnn import AMPGNN
from mimo_fast.detect.learned.base import LearnedDetector
from mimo_fast.detect.learned.gepnet import GEPNet
from mimo_fast.detect.learned.gnn import GNN
from mimo_fast.detect.linear import LMMSE, MF, VBLAST, ZF
from mimo_fast.detect.tree import ML, KBest, Sphere

#: name -> class. Learned detectors register here when they exist.
REGISTRY: dict = {
    "mf": MF, "zf": ZF, "lmmse": LMMSE, "ml": ML, "sphere": Sphere, "kbest": KBest,
    "vblast": VBLAST, "amp": AMP, "oamp": OAMP, "ep": EP,
    "gnn": GNN, "gepnet": GEPNet, "ampgnn": AMPGNN,
}
#: learned detectors named by DESIGN.md that this version does not provide yet
NOT_YET = ("oampnet", "oampnet2", "remimo", "e2e")
NAMES = tuple(REGISTRY) + tuple(n for n in NOT_YET if n not in REGISTRY)


class DetectorNotAvailableError(NotImplementedError):
    """A detector DESIGN.md names but this version does not provide."""


def available() -> tuple:
    return tuple(REGISTRY)


def make(name: str, constellation, *, nr: Optional[int] = None, nt: Optional[int] = None,
         weights=None, pretrained: bool = True, **options) -> nn.Module:
    """Build detector ``name`` for ``constellation`` (a Constellation, ``"qam16"`` or 16).

    ``options`` go to the detector (e.g. ``iterations``, ``damping`` for ep; ``k`` for
    kbest; ``backend`` for the op-based ones). Classical detectors take no ``weights``.

    Learned detectors (a :class:`~mimo_fast.detect.learned.LearnedDetector`):

    * ``weights=None`` (default): the shipped weights for (name, nr, nt, constellation)
      (:func:`~mimo_fast.detect.learned.weights.find_shipped`); a ``WeightsError`` lists
      what is shipped when none fits.
    * ``weights=PATH``: the model stored in that file (its configuration with ``options``
      overriding, e.g. ``backend``); it must be a ``name`` detector for ``constellation``.
    * ``pretrained=False`` (and no ``weights``): a freshly initialised, untrained model
      built from ``options`` (for training code and tests).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key not in REGISTRY:
        if key in NOT_YET:
            raise DetectorNotAvailableError(
                f"detector {name!r} is a learned detector that is not available in this version of "
                f"mimo_fast (a later release adds it); available: {', '.join(REGISTRY)}")
        raise ValueError(f"unknown detector name {name!r}; choose from {', '.join(NAMES)}")
    cls = REGISTRY[key]
    if not issubclass(cls, LearnedDetector):
        if weights is not None:
            raise ValueError(f"weights: detector {name!r} is classical and takes no weights")
        return cls(constellation, nr=nr, nt=nt, **options)
    if weights is None and not pretrained:
        return cls(constellation, nr=nr, nt=nt, **options)
    if weights is None:
        weights = _weights.find_shipped(key, nr, nt, constellation)
    det = _weights.load(weights, expect=key, registry=REGISTRY, **options)
    _fits(det, str(weights), constellation, nr, nt)
    return det


def _fits(det, where: str, constellation, nr, nt) -> None:
    """A loaded model must be for the constellation asked for and serve (nr, nt)."""
    want = as_constellation(constellation)
    have = det.constellation
    if have.order != want.order or not torch.allclose(have.points, want.points, atol=1e-6):
        raise _weights.WeightsError(f"weights: {where} was trained for constellation {have.name!r} "
                                    f"(Q={have.order}), not {want.name!r} (Q={want.order})")
    if nr is not None and det.nr is not None and nr != det.nr:
        raise _weights.WeightsError(f"weights: {where} was made for nr={det.nr}, not nr={nr}")
    if nt is not None and det.nt is not None and nt > det.nt:
        raise _weights.WeightsError(f"weights: {where} serves at most nt={det.nt} users, asked for nt={nt}")


__all__ = ["make", "available", "REGISTRY", "NAMES", "NOT_YET", "Detector", "DetectorOutput",
           "bit_llrs", "DetectorNotAvailableError", "LearnedDetector", "GNN", "GEPNet", "AMPGNN"]
