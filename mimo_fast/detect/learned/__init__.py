"""Learned detectors (GEPNet, AMP-GNN, GNN, OAMPNet, OAMPNet-2, ...): the shared base
class and weight files. Each model module registers itself in
:data:`mimo_fast.detect.REGISTRY` through :mod:`mimo_fast.detect`."""
from mimo_fast.detect.learned.base import LearnedDetector
from mimo_fast.detect.learned.weights import WeightsError

__all__ = ["LearnedDetector", "WeightsError"]
