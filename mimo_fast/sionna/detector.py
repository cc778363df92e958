"""``MimoFastDetector``: a mimo_fast detector as a Sionna PHY MIMO detector block.

Sionna's MIMO detectors (``sionna.phy.mimo.*Detector``) are called ``det(y, h, s)`` with
``y [..., M]``, ``h [..., M, K]`` and ``s [..., M, M]`` the noise(-plus-interference)
covariance, and Sionna's OFDM wrappers (``sionna.phy.ofdm.OFDMDetector``) call any
detector that way. This block does the same around any detector of
:mod:`mimo_fast.detect`:

1. whiten as Sionna does (``whiten_channel``): ``L L^H = s`` (Cholesky),
   ``y~ = L^-1 y``, ``H~ = L^-1 h``, so the noise becomes ``CN(0, I)``;
2. rescale each problem so that ``||H~||_F^2 = K`` (mimo_fast's channel model: entries
   CN(0, 1/M), ``E||H||_F^2 = K``): ``a^2 = K / ||H~||_F^2``, pass ``a y~, a H~`` and noise
   variance ``a^2``. The detection problem is the same; classical detectors give the same
   answer either way, but the learned ones were trained at mimo_fast's channel scale and
   are not scale invariant (GEPNet 8x8 16-QAM 20 dB: SER 0.0235 at unit noise vs 0.0213 at
   the trained scale, 16,000 symbols; 0.0213 with this rescaling). ``rescale=False`` skips
   step 2 (unit noise variance);
3. run the mimo_fast detector (``det(y, H, noise_var)``) and map its output into Sionna's
   conventions (:mod:`mimo_fast.sionna.labels`): symbol logits reordered into Sionna's point
   order, bit LLRs ``log P(b=1)/P(b=0)`` (Sionna's and mimo_fast's sign) over Sionna's bit
   labels, bits in Sionna's order.

Outputs, as Sionna's detectors: ``output="bit"``: ``[..., K, m]`` LLRs, or hard bits
(``hard_out``: ``LLR > 0`` as 0./1. floats, Sionna's ``hard_decisions``); ``output="symbol"``:
``[..., K, Q]`` logits, or ``[..., K]`` int32 Sionna point indices (``hard_out``: the
detector's own decision, e.g. the ML vector of ``ml``/``kbest``/``sphere``).
Batch dimensions are arbitrary and broadcast (``y``, ``h``, ``s`` may differ in leading
dimensions as long as they broadcast).
"""
from __future__ import annotations

from typing import Optional

import torch
from sionna.phy.block import Block
from sionna.phy.mapping import Constellation as SionnaConstellation
from torch import Tensor, nn

from mimo_fast import detect
from mimo_fast.comm import Constellation
from mimo_fast.detect.base import Detector, bit_llrs
from mimo_fast.detect.learned import LearnedDetector
from mimo_fast.sionna import labels

OUTPUTS = ("bit", "symbol")
DEMAPPING_METHODS = ("app", "maxlog")


class MimoFastDetector(Block):
    """Any mimo_fast detector (a name of ``mimo_fast.detect.available()`` or a built
    :class:`~mimo_fast.detect.Detector`) as a Sionna MIMO detector; see the module doc.

    :param detector: detector name (``"ep"``, ``"gepnet"``, ...) or a mimo_fast detector module
    :param output: ``"bit"`` (LLRs) or ``"symbol"`` (logits)
    :param demapping_method: ``"app"`` or ``"maxlog"``: how bit LLRs are computed from the
        detector's symbol logits (and, for ``ml``, its symbol marginals)
    :param constellation_type, num_bits_per_symbol, constellation: as in Sionna (``"qam"``
        and ``num_bits_per_symbol`` alone is enough; for a custom Sionna constellation,
        classical detectors detect its points). A learned detector needs the QAM it was
        trained for; ``e2e`` needs the QAM it started from and then detects its learned
        points: transmit with :attr:`constellation` (a custom Sionna constellation).
    :param hard_out: hard decisions instead of soft values
    :param precision, device: as in Sionna; a learned detector's parameters are cast to them
    :param num_rx_ant, num_streams: M and K, to pick a learned detector's shipped weights
        (and checked on every call); optional for classical detectors
    :param weights: a weights file for a learned detector
    :param rescale: step 2 of the module doc (default True)
    :param options: the mimo_fast detector's own options (``iterations``, ``k``, ...)

    :input y: [..., M] complex; :input h: [..., M, K] complex; :input s: [..., M, M] complex
        Hermitian positive definite; :input prior: must be None (no mimo_fast detector
        takes priors)
    """

    def __init__(self, detector, output: str = "bit", demapping_method: str = "maxlog",
                 constellation_type: Optional[str] = None, num_bits_per_symbol: Optional[int] = None,
                 constellation: Optional[SionnaConstellation] = None, hard_out: bool = False,
                 precision: Optional[str] = None, device: Optional[str] = None, *,
                 num_rx_ant: Optional[int] = None, num_streams: Optional[int] = None, weights=None,
                 rescale: bool = True, **options):
        super().__init__(precision=precision, device=device)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if demapping_method not in DEMAPPING_METHODS:
            raise ValueError(f"demapping_method must be one of {DEMAPPING_METHODS}, got {demapping_method!r}")
        for arg, val in (("hard_out", hard_out), ("rescale", rescale)):
            if not isinstance(val, bool):
                raise TypeError(f"{arg} must be a bool, got {val!r}")
        self._output, self._demapping_method, self._hard_out = output, demapping_method, hard_out
        self._rescale = rescale
        det = self._make(detector, constellation_type, num_bits_per_symbol, constellation,
                         num_rx_ant, num_streams, weights, options, demapping_method)
        det = det.double() if self.precision == "double" else det.float()
        self._detector = det.to(self.device)
        pts = labels.sionna_points(self._constellation)
        perm = labels.label_permutation(pts, det.constellation)
        self.register_buffer("_perm", perm.to(self.device), persistent=False)
        self.register_buffer("_inv", torch.argsort(perm).to(self.device), persistent=False)
        self._labels = labels.bit_labels(pts)
        self._num_rx_ant, self._num_streams = num_rx_ant, num_streams

    # --- construction -----------------------------------------------------------------
    def _make(self, detector, constellation_type, num_bits_per_symbol, constellation, nr, nt,
              weights, options, demapping_method) -> nn.Module:
        if isinstance(detector, Detector):
            if weights is not None or options:
                raise ValueError("detector: a built mimo_fast detector takes no weights or options here; "
                                 "pass them when building it (mimo_fast.detect.make)")
            if constellation is None and constellation_type is None and num_bits_per_symbol is None:
                self._constellation = self._custom(detector.constellation)
            else:
                self._constellation = self._sionna(constellation_type, num_bits_per_symbol, constellation)
            return detector
        if not isinstance(detector, str):
            raise TypeError(f"detector must be a name or a mimo_fast detector, got {type(detector).__name__}")
        key = detector.lower()
        if key not in detect.REGISTRY:
            raise ValueError(f"detector: unknown name {detector!r}; choose from {', '.join(detect.available())}")
        sc = self._sionna(constellation_type, num_bits_per_symbol, constellation)
        pts = labels.sionna_points(sc)
        cls = detect.REGISTRY[key]
        learned = issubclass(cls, LearnedDetector)
        ours = labels.matching_qam(pts)
        if ours is None:
            if learned:
                raise ValueError(f"constellation: {key} is a learned detector trained for a QAM; the Sionna "
                                 "constellation given is not one (give constellation_type='qam' and "
                                 "num_bits_per_symbol)")
            ours = Constellation(pts, name="sionna-custom")
        if key == "ml":
            options.setdefault("soft", demapping_method)   # Sionna's ML: app or max-log marginals
        kw = dict(nr=nr, nt=nt)
        if learned:
            kw["weights"] = weights
        elif weights is not None:
            raise ValueError(f"weights: detector {key!r} is classical and takes no weights")
        det = detect.make(key, ours, **kw, **options)
        self._constellation = sc
        if getattr(det, "transmits_own_constellation", False):
            try:
                labels.label_permutation(pts, det.constellation)
            except ValueError:      # e2e: it detects its learned points; the transmitter must send them
                self._constellation = self._custom(det.constellation)
        return det

    def _sionna(self, constellation_type, num_bits_per_symbol, constellation) -> SionnaConstellation:
        if constellation is None and constellation_type is None:
            if num_bits_per_symbol is None:
                raise ValueError("give num_bits_per_symbol (with constellation_type 'qam', the default) "
                                 "or a Sionna constellation")
            constellation_type = "qam"
        if constellation is not None and not isinstance(constellation, SionnaConstellation):
            raise TypeError(f"constellation must be a sionna.phy.mapping.Constellation, got "
                            f"{type(constellation).__name__}")
        return SionnaConstellation.check_or_create(constellation_type=constellation_type,
                                                   num_bits_per_symbol=num_bits_per_symbol,
                                                   constellation=constellation, precision=self.precision,
                                                   device=self.device)

    def _custom(self, c: Constellation) -> SionnaConstellation:
        if c.bits_per_symbol is None:
            raise ValueError(f"constellation: {c!r} has no bit labels (its order is not a power of two)")
        return SionnaConstellation("custom", c.bits_per_symbol, points=c.points.to(self.cdtype),
                                   precision=self.precision, device=self.device)

    # --- properties -------------------------------------------------------------------
    @property
    def constellation(self) -> SionnaConstellation:
        """The Sionna constellation this detector detects (transmit with it)."""
        return self._constellation

    @property
    def detector(self) -> nn.Module:
        """The wrapped mimo_fast detector."""
        return self._detector

    @property
    def num_bits_per_symbol(self) -> int:
        return self._constellation.num_bits_per_symbol

    def extra_repr(self) -> str:
        return (f"output={self._output!r}, demapping_method={self._demapping_method!r}, "
                f"hard_out={self._hard_out}, precision={self.precision!r}")

    # --- call -------------------------------------------------------------------------
    def _flatten(self, y: Tensor, h: Tensor, s: Tensor):
        for arg, t, rank in (("y", y, 1), ("h", h, 2), ("s", s, 2)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{arg} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() < rank:
                raise ValueError(f"{arg} must have at least {rank} dimension(s), got shape {tuple(t.shape)}")
        M, K = h.shape[-2], h.shape[-1]
        if y.shape[-1] != M or s.shape[-2:] != (M, M):
            raise ValueError(f"shapes: y [..., M], h [..., M, K], s [..., M, M] with M = {M} from h; got "
                             f"y {tuple(y.shape)}, s {tuple(s.shape)}")
        for arg, want in (("num_rx_ant", M), ("num_streams", K)):
            have = getattr(self, "_" + arg)
            if have is not None and have != want:
                raise ValueError(f"h has {arg} = {want}, but the detector was built with {arg}={have}")
        try:
            batch = torch.broadcast_shapes(y.shape[:-1], h.shape[:-2], s.shape[:-2])
        except RuntimeError:
            raise ValueError(f"batch dimensions do not broadcast: y {tuple(y.shape)}, h {tuple(h.shape)}, "
                             f"s {tuple(s.shape)}") from None
        if not s.is_complex():
            s = s.to(y.dtype)
        flat = (-1,) if batch else (1,)
        return (batch, y.expand(*batch, M).reshape(*flat, M), h.expand(*batch, M, K).reshape(*flat, M, K),
                s.expand(*batch, M, M).reshape(*flat, M, M))

    def _whiten(self, y: Tensor, h: Tensor, s: Tensor):
        L, info = torch.linalg.cholesky_ex(s)
        bad = int((info != 0).sum())
        if bad:
            raise ValueError(f"s: {bad} of {s.shape[0]} noise covariance matrices are not Hermitian positive "
                             "definite (Cholesky failed); detection needs a full-rank covariance")
        y = torch.linalg.solve_triangular(L, y[..., None], upper=False)[..., 0]
        h = torch.linalg.solve_triangular(L, h, upper=False)
        nv = torch.ones(y.shape[0], dtype=h.dtype.to_real(), device=h.device)
        if self._rescale:
            e = h.abs().square().sum((-2, -1))
            nv = torch.where(e > 0, h.shape[-1] / e.clamp_min(torch.finfo(e.dtype).tiny), nv)
            a = nv.sqrt()
            y, h = y * a[:, None], h * a[:, None, None]
        return y, h, nv

    def call(self, y: Tensor, h: Tensor, s: Tensor, prior: Optional[Tensor] = None) -> Tensor:
        if prior is not None:
            raise ValueError("prior: mimo_fast detectors take no prior information; use Sionna's "
                             "MaximumLikelihoodDetector or MMSEPICDetector for detection with priors")
        batch, y, h, s = self._flatten(y, h, s)
        y, h, nv = self._whiten(y, h, s)
        out = self._detector(y, h, nv)
        logits = out.logits[..., self._perm]                     # Sionna's point order
        if self._output == "symbol":
            z = self._inv[out.hard].to(torch.int32) if self._hard_out else logits
        else:
            z = bit_llrs(logits, self._labels, self._demapping_method)
            if self._hard_out:
                z = (z > 0).to(z.dtype)                          # sionna.phy.utils.hard_decisions
        return z.reshape(*batch, *z.shape[1:])


__all__ = ["MimoFastDetector", "OUTPUTS", "DEMAPPING_METHODS"]
