"""One Sionna-style class per mimo_fast detector (:class:`MimoFastDetector` with the name
fixed), and Sionna's own constructor signatures where Sionna has the detector:

* :class:`LinearDetector` ``(equalizer, output, demapping_method, constellation_type,
  num_bits_per_symbol, constellation, hard_out, precision, device)`` with ``equalizer`` in
  ``"lmmse"``, ``"zf"``, ``"mf"``;
* :class:`MaximumLikelihoodDetector` ``(output, demapping_method, num_streams, ...)``;
* :class:`KBestDetector` ``(output, num_streams, k, ...)``;
* :class:`EPDetector` ``(output, num_bits_per_symbol, hard_out, l, beta, precision,
  device)``. ``l`` and ``beta`` are EP's iterations and damping (the kept fraction of the
  previous precisions: the same update as Sionna's); left at None they are mimo_fast's
  defaults (10 and 0.7, with ``lam0=1``), not Sionna's (10 and 0.9, with ``lam0`` =
  :func:`sionna_ep_lam0`). ``EPDetector(output, m, sionna_defaults=True)`` takes Sionna's
  three (measured: the same hard decisions as ``sionna.phy.mimo.EPDetector`` on every one
  of 32,000 symbols, 8x8 16-QAM at 18 and 22 dB; tests/test_sionna.py).

Every other detector takes the generic order ``(output, demapping_method,
constellation_type, num_bits_per_symbol, constellation, hard_out, precision, device)`` and
the keywords of :class:`MimoFastDetector` (``num_rx_ant``, ``num_streams``, ``weights``,
``rescale``, and the detector's own options).
"""
from __future__ import annotations

from typing import Optional

from mimo_fast.sionna.detector import MimoFastDetector


class _Named(MimoFastDetector):
    #: the mimo_fast detector name (``mimo_fast.detect.available()``)
    detector_name = ""

    def __init__(self, output: str = "bit", demapping_method: str = "maxlog",
                 constellation_type: Optional[str] = None, num_bits_per_symbol: Optional[int] = None,
                 constellation=None, hard_out: bool = False, precision: Optional[str] = None,
                 device: Optional[str] = None, **kw):
        super().__init__(self.detector_name, output, demapping_method, constellation_type, num_bits_per_symbol,
                         constellation, hard_out, precision, device, **kw)


class MFDetector(_Named):
    """mimo_fast ``mf``: matched filter, unbiased per-stream Gaussian logits."""
    detector_name = "mf"


class ZFDetector(_Named):
    """mimo_fast ``zf``: zero forcing (needs M >= K)."""
    detector_name = "zf"


class LMMSEDetector(_Named):
    """mimo_fast ``lmmse``: the same LLRs as ``sionna.phy.mimo.LinearDetector("lmmse", ...)``."""
    detector_name = "lmmse"


class VBLASTDetector(_Named):
    """mimo_fast ``vblast``: ordered MMSE-SIC."""
    detector_name = "vblast"


class MLDetector(_Named):
    """mimo_fast ``ml``: exhaustive ML; ``demapping_method`` also picks its symbol logits
    (``"app"`` marginals or max-log), as Sionna's ML detector does."""
    detector_name = "ml"


class SphereDetector(_Named):
    """mimo_fast ``sphere``: Schnorr-Euchner sphere decoding (per vector; small systems)."""
    detector_name = "sphere"


class AMPDetector(_Named):
    """mimo_fast ``amp``: approximate message passing (for M >= 2K)."""
    detector_name = "amp"


class OAMPDetector(_Named):
    """mimo_fast ``oamp``: orthogonal AMP."""
    detector_name = "oamp"


class OAMPNetDetector(_Named):
    """mimo_fast ``oampnet`` (learned; shipped weights or ``weights=``)."""
    detector_name = "oampnet"


class OAMPNet2Detector(_Named):
    """mimo_fast ``oampnet2`` (learned; shipped weights: 8x8 16-QAM)."""
    detector_name = "oampnet2"


class GNNDetector(_Named):
    """mimo_fast ``gnn`` (learned; ``weights=``)."""
    detector_name = "gnn"


class GEPNetDetector(_Named):
    """mimo_fast ``gepnet`` (learned; shipped weights: 8x8 16-QAM, give num_rx_ant=8,
    num_streams=8)."""
    detector_name = "gepnet"


class AMPGNNDetector(_Named):
    """mimo_fast ``ampgnn`` (learned; shipped weights: 32x32 QPSK)."""
    detector_name = "ampgnn"


class REMIMODetector(_Named):
    """mimo_fast ``remimo`` (learned; shipped weights: 64 antennas, 16..32 streams, 16-QAM)."""
    detector_name = "remimo"


class E2EDetector(_Named):
    """mimo_fast ``e2e`` (learned constellation + GNN receiver; shipped: 8x8 and 8x2 from
    16-QAM). ``num_bits_per_symbol`` names the QAM it started from; it detects its learned
    points, so transmit with ``det.constellation`` (a custom Sionna constellation)."""
    detector_name = "e2e"


class LinearDetector(MimoFastDetector):
    """Sionna's ``LinearDetector`` signature on mimo_fast's linear detectors."""

    EQUALIZERS = ("lmmse", "zf", "mf")

    def __init__(self, equalizer, output: str, demapping_method: str, constellation_type: Optional[str] = None,
                 num_bits_per_symbol: Optional[int] = None, constellation=None, hard_out: bool = False,
                 precision: Optional[str] = None, device: Optional[str] = None, **kw):
        if not isinstance(equalizer, str):
            raise TypeError("equalizer: mimo_fast provides 'lmmse', 'zf' and 'mf'; for a custom equalizer "
                            "callable use sionna.phy.mimo.LinearDetector")
        if equalizer not in self.EQUALIZERS:
            raise ValueError(f"equalizer must be one of {self.EQUALIZERS}, got {equalizer!r}")
        super().__init__(equalizer, output, demapping_method, constellation_type, num_bits_per_symbol,
                         constellation, hard_out, precision, device, **kw)


class MaximumLikelihoodDetector(MimoFastDetector):
    """Sionna's ``MaximumLikelihoodDetector`` signature on mimo_fast's ``ml``."""

    def __init__(self, output: str, demapping_method: str, num_streams: int,
                 constellation_type: Optional[str] = None, num_bits_per_symbol: Optional[int] = None,
                 constellation=None, hard_out: bool = False, precision: Optional[str] = None,
                 device: Optional[str] = None, **kw):
        super().__init__("ml", output, demapping_method, constellation_type, num_bits_per_symbol, constellation,
                         hard_out, precision, device, num_streams=num_streams, **kw)


class KBestDetector(MimoFastDetector):
    """Sionna's ``KBestDetector`` signature on mimo_fast's ``kbest`` (complex-domain tree;
    LLRs max-log over the K survivors, see :mod:`mimo_fast.detect.tree`)."""

    def __init__(self, output: str, num_streams: int, k: int, constellation_type: Optional[str] = None,
                 num_bits_per_symbol: Optional[int] = None, constellation=None, hard_out: bool = False,
                 use_real_rep: bool = False, list2llr=None, precision: Optional[str] = None,
                 device: Optional[str] = None, demapping_method: str = "maxlog", **kw):
        if use_real_rep:
            raise ValueError("use_real_rep: mimo_fast's kbest searches the complex tree only; use "
                             "sionna.phy.mimo.KBestDetector for the real-valued representation")
        if list2llr is not None:
            raise ValueError("list2llr: mimo_fast's kbest computes its own max-log LLRs from the survivors; "
                             "use sionna.phy.mimo.KBestDetector for a custom list2llr")
        super().__init__("kbest", output, demapping_method, constellation_type, num_bits_per_symbol,
                         constellation, hard_out, precision, device, num_streams=num_streams, k=k, **kw)


def sionna_ep_lam0(num_bits_per_symbol: int) -> float:
    """The initial EP precision of ``sionna.phy.mimo.EPDetector``: ``1 / points.var()`` of
    its PAM levels, and torch's ``var`` is the unbiased sample variance over the
    ``L = 2^(m/2)`` levels, so ``(L - 1) / (L E[x_re^2]) = 2 (L - 1) / L`` for unit-energy
    QAM (16-QAM: 1.5; the prior precision ``1 / E[x_re^2]``, mimo_fast's ``lam0="prior"``,
    is 2)."""
    if not isinstance(num_bits_per_symbol, int) or num_bits_per_symbol < 2 or num_bits_per_symbol % 2:
        raise ValueError(f"num_bits_per_symbol must be an even int >= 2 (QAM), got {num_bits_per_symbol!r}")
    L = 2 ** (num_bits_per_symbol // 2)
    return 2.0 * (L - 1) / L


class EPDetector(MimoFastDetector):
    """Sionna's ``EPDetector`` signature on mimo_fast's ``ep`` (see the module doc for ``l``,
    ``beta`` and ``sionna_defaults``). LLRs are max-log by default, as Sionna's EP computes
    them."""

    def __init__(self, output: str, num_bits_per_symbol: Optional[int] = None, hard_out: bool = False,
                 l: Optional[int] = None, beta: Optional[float] = None,  # noqa: E741 (Sionna's name)
                 precision: Optional[str] = None, device: Optional[str] = None, *,
                 demapping_method: str = "maxlog", constellation_type: Optional[str] = None,
                 constellation=None, sionna_defaults: bool = False, **kw):
        if sionna_defaults:
            if num_bits_per_symbol is None:
                raise ValueError("sionna_defaults needs num_bits_per_symbol (Sionna's EP start depends on it)")
            l = 10 if l is None else l  # noqa: E741
            beta = 0.9 if beta is None else beta
            kw.setdefault("lam0", sionna_ep_lam0(num_bits_per_symbol))
        if l is not None:
            kw["iterations"] = l
        if beta is not None:
            kw["damping"] = beta
        super().__init__("ep", output, demapping_method, constellation_type, num_bits_per_symbol, constellation,
                         hard_out, precision, device, **kw)


#: mimo_fast detector name -> its class here
CLASSES = {c.detector_name: c for c in (
    MFDetector, ZFDetector, LMMSEDetector, VBLASTDetector, MLDetector, SphereDetector, AMPDetector,
    OAMPDetector, OAMPNetDetector, OAMPNet2Detector, GNNDetector, GEPNetDetector, AMPGNNDetector,
    REMIMODetector, E2EDetector)}
CLASSES["kbest"] = KBestDetector
CLASSES["ep"] = EPDetector

__all__ = ["MFDetector", "ZFDetector", "LMMSEDetector", "VBLASTDetector", "MLDetector", "SphereDetector",
           "AMPDetector", "OAMPDetector", "OAMPNetDetector", "OAMPNet2Detector", "GNNDetector",
           "GEPNetDetector", "AMPGNNDetector", "REMIMODetector", "E2EDetector", "LinearDetector",
           "MaximumLikelihoodDetector", "KBestDetector", "EPDetector", "CLASSES", "sionna_ep_lam0"]
