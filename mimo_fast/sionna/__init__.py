"""mimo_fast detectors as NVIDIA Sionna PHY MIMO detectors (docs/sionna.md).

``from mimo_fast.sionna import EPDetector, GEPNetDetector, MimoFastDetector`` gives blocks
called like ``sionna.phy.mimo`` detectors, ``det(y, h, s)``, usable inside Sionna's OFDM
detector wrappers (``sionna.phy.ofdm.OFDMDetector``). Needs the optional dependency
``sionna-no-rt>=2.2`` (``pip install 'mimo-fast[sionna]'``, Python >= 3.11).
"""
from __future__ import annotations

try:
    import sionna.phy  # noqa: F401
except ImportError as e:      # ModuleNotFoundError, or a broken install
    raise ImportError(
        "mimo_fast.sionna needs NVIDIA Sionna PHY (the PyTorch one, >= 2.2): "
        "pip install 'mimo-fast[sionna]'  (or pip install 'sionna-no-rt>=2.2'; Python >= 3.11). "
        f"Importing it failed with: {type(e).__name__}: {e}") from e

from mimo_fast.sionna.detector import MimoFastDetector  # noqa: E402
from mimo_fast.sionna.detectors import (  # noqa: E402
    CLASSES, AMPDetector, AMPGNNDetector, E2EDetector, EPDetector, GEPNetDetector, GNNDetector, KBestDetector,
    LinearDetector, LMMSEDetector, MaximumLikelihoodDetector, MFDetector, MLDetector, OAMPDetector,
    OAMPNet2Detector, OAMPNetDetector, REMIMODetector, SphereDetector, VBLASTDetector, ZFDetector,
    sionna_ep_lam0)
from mimo_fast.sionna.labels import label_permutation  # noqa: E402

__all__ = ["MimoFastDetector", "CLASSES", "label_permutation", "MFDetector", "ZFDetector", "LMMSEDetector",
           "VBLASTDetector", "MLDetector", "SphereDetector", "AMPDetector", "OAMPDetector", "OAMPNetDetector",
           "OAMPNet2Detector", "GNNDetector", "GEPNetDetector", "AMPGNNDetector", "REMIMODetector",
           "E2EDetector", "LinearDetector", "MaximumLikelihoodDetector", "KBestDetector", "EPDetector",
           "sionna_ep_lam0"]
