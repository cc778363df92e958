"""Sionna's constellations and bit labels next to mimo_fast's.

Both libraries label a point by its index, bits = the binary digits of the index, most
significant first, and both QAMs are Gray labelled with unit average energy -- but they
are different Gray labellings:

* mimo_fast (:func:`mimo_fast.comm.qam`): the first ``m/2`` bits label the real PAM level,
  the last ``m/2`` the imaginary one, and bit value 0 is the *negative* end;
* Sionna (5G, TS 38.211 sec. 5.1; ``sionna.phy.mapping.qam``): bits alternate,
  ``b[0::2]`` label the real level and ``b[1::2]`` the imaginary one, and bit value 0 is
  the *positive* end.

So the same bits give different points. Nothing here relies on either rule: the map is
built from the points themselves. ``perm[j]`` is the mimo_fast index of Sionna's point
``j`` (:func:`label_permutation`); symbol logits are reordered with it, and bit LLRs are
then computed over Sionna's labels (a :class:`~mimo_fast.comm.Constellation` holding
Sionna's points in Sionna's order has exactly Sionna's labels), which is exact for both
``"app"`` and ``"maxlog"``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from mimo_fast.comm import Constellation, qam

#: points closer than this are the same point (Sionna stores float32: ~1e-7 apart;
#: the closest 256-QAM points are 0.15 apart)
POINT_ATOL = 1e-5


def sionna_points(constellation) -> Tensor:
    """``(Q,)`` complex128 points of a Sionna ``Constellation``, in Sionna's label order."""
    return constellation().detach().to("cpu", torch.complex128)


def label_permutation(points: Tensor, ours: Constellation, atol: float = POINT_ATOL) -> Tensor:
    """``perm (Q,)`` int64 with ``ours.points[perm[j]] == points[j]``: the mimo_fast label of
    the point Sionna labels ``j``. ``ValueError`` when the point sets differ."""
    pts = torch.as_tensor(points).to("cpu", torch.complex128)
    if pts.shape != ours.points.shape:
        raise ValueError(f"constellation: {pts.numel()} points, but the detector's {ours.name} has {ours.order}")
    d = (pts[:, None] - ours.points[None, :]).abs()
    perm = d.argmin(1)
    far = float(d.gather(1, perm[:, None]).max())
    if far > atol or torch.unique(perm).numel() != perm.numel():
        raise ValueError(f"constellation: its points are not those of the detector's {ours.name} "
                         f"(largest distance to the nearest point {far:.3g}); give the constellation "
                         "the detector was built or trained for")
    return perm


def matching_qam(points: Tensor):
    """mimo_fast's QAM with the same points as ``points`` (any labelling), or None."""
    q = points.numel()
    if q not in (4, 16, 64, 256):
        return None
    c = qam(q)
    try:
        label_permutation(points, c)
    except ValueError:
        return None
    return c


def bit_labels(points: Tensor) -> Constellation:
    """A mimo_fast Constellation of ``points`` in the given (Sionna) order: its labels,
    hence :func:`mimo_fast.detect.bit_llrs` over it, are Sionna's."""
    return Constellation(points.to(torch.complex128), name="sionna-labels")


__all__ = ["label_permutation", "matching_qam", "bit_labels", "sionna_points", "POINT_ATOL"]
