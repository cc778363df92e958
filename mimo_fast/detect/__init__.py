"""Detectors: ``make(name, constellation, *, nr=None, nt=None, weights=None, **options)``.

Every detector is an ``nn.Module`` called as ``det(y, H, noise_var, mask=None)`` and
returns a :class:`DetectorOutput` (``.logits``, ``.hard``, ``.llr(method)``). See
:mod:`mimo_fast.detect.base` for the conventions.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from mimo_fast.comm import as_constellation
from mimo_fast.detect.base import Detector, DetectorOutput, bit_llrs
from mimo_fast.detect.iterative import AMP, EP, OAMP
from mimo_fast.detect.learned import LearnedDetector
from mimo_fast.detect.learned.ampgnn import AMPGNN
from mimo_fast.detect.learned.e2e import E2E
from mimo_fast.detect.learned.gepnet import GEPNet
from mimo_fast.detect.learned.gnn import GNN
from mimo_fast.detect.learned.oampnet import OAMPNet, OAMPNet2
from mimo_fast.detect.learned.remimo import REMIMO
from mimo_fast.detect.linear import LMMSE, MF, VBLAST, ZF
from mimo_fast.detect.tree import ML, KBest, Sphere

#: name -> class. Learned detectors register here when they exist.
REGISTRY: dict = {
    "mf": MF, "zf": ZF, "lmmse": LMMSE, "ml": ML, "sphere": Sphere, "kbest": KBest,
    "vblast": VBLAST, "amp": AMP, "oamp": OAMP, "ep": EP,
    "oampnet": OAMPNet, "oampnet2": OAMPNet2,
    "gnn": GNN, "gepnet": GEPNet, "ampgnn": AMPGNN,
    "e2e": E2E, "remimo": REMIMO,
}
#: learned detectors of the detector list (docs/conventions.md) that this version does not provide yet
NOT_YET: tuple = ()
NAMES = tuple(REGISTRY) + tuple(n for n in NOT_YET if n not in REGISTRY)


class DetectorNotAvailableError(NotImplementedError):
    """A detector of the documented list (docs/conventions.md) that this version does not provide."""


def available() -> tuple:
    return tuple(REGISTRY)


def make(name: str, constellation, *, nr: Optional[int] = None, nt: Optional[int] = None,
         weights=None, pretrained: bool = True, **options) -> nn.Module:
    """Build detector ``name`` for ``constellation`` (a Constellation, ``"qam16"`` or 16).

    ``options`` go to the detector (e.g. ``iterations``, ``damping`` for ep; ``k`` for
    kbest; ``backend`` for the op-based ones). Classical detectors take no ``weights``.
    Learned detectors load ``weights`` (a file) or, when None, the shipped weights for
    (name, nr, nt, constellation) (an error lists what is shipped); ``pretrained=False``
    builds an untrained model instead (training code, tests).
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
    if issubclass(cls, LearnedDetector):
        if not pretrained:
            if weights is not None:
                raise ValueError("weights: pass weights or pretrained=False, not both")
            return cls(constellation, nr=nr, nt=nt, **options)
        from mimo_fast.detect.learned import weights as files
        c = as_constellation(constellation)
        path = weights if weights is not None else files.find_shipped(key, nr, nt, c)
        det = files.load(path, expect=key, **options)
        # e2e answers to the QAM its learned constellation started from (--mod qam16)
        have = det.constellation_request
        if have != c.name:
            raise files.WeightsError(f"weights: {str(path)!r} is for {have}, not {c.name}")
        return det
    if weights is not None:
        raise ValueError(f"weights: detector {name!r} is classical and takes no weights")
    return cls(constellation, nr=nr, nt=nt, **options)


__all__ = ["make", "available", "REGISTRY", "NAMES", "NOT_YET", "Detector", "DetectorOutput",
           "bit_llrs", "DetectorNotAvailableError"]
