"""Constellations: Gray-labelled QAM and custom/learned point sets, one type.

Labelling convention (docs/conventions.md): a point's index ``q`` *is* its label; its bits are the
binary digits of ``q``, most significant first (``bits[k] = (q >> (m-1-k)) & 1``).
For QAM of order ``Q = L^2`` the first ``m/2`` bits Gray-label the real part and the last
``m/2`` the imaginary part, each over the ``L``-PAM levels ``2l - (L-1)``, so horizontally
or vertically adjacent points differ in exactly one bit. Points are scaled to unit
average energy.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

QAM_ORDERS = (4, 16, 64, 256)


def _gray_to_binary(g: Tensor) -> Tensor:
    b = g.clone()
    shift = g >> 1
    while bool(shift.any()):
        b ^= shift
        shift >>= 1
    return b


class Constellation:
    """A set of ``Q`` complex points with labels ``0..Q-1``.

    Attributes:
        points: ``(Q,)`` complex128 (cast with :meth:`points_as`).
        bits_per_symbol: ``log2(Q)`` (Q must be a power of two for bit mappings).
        name: e.g. ``"qam16"`` or ``"custom"``.
        real_levels / imag_levels: the distinct values of Re/Im of the points (sorted);
            for QAM both are the PAM levels. ``real_index``/``imag_index`` ``(Q,)`` give
            each point's level, and ``real_prior``/``imag_prior`` the level probabilities
            under uniform symbols (the PAM decomposition used by real-domain detectors).
        separable: True when the points are exactly the product grid of real and
            imaginary levels (QAM), so the real-equivalent detectors are exact.
    """

    def __init__(self, points, name: str = "custom", normalize: bool = False):
        pts = torch.as_tensor(points)
        if not pts.is_complex():
            raise TypeError(f"points must be complex, got dtype {pts.dtype}")
        if pts.dim() != 1 or pts.numel() < 2:
            raise ValueError(f"points must be 1-D with at least 2 entries, got shape {tuple(pts.shape)}")
        pts = pts.detach().to(torch.complex128)
        if normalize:
            pts = pts / pts.abs().square().mean().sqrt()
        self.points = pts
        self.name = name
        Q = pts.numel()
        self.order = Q
        m = int(round(math.log2(Q)))
        self.bits_per_symbol = m if 2 ** m == Q else None
        self.energy = float(pts.abs().square().mean())
        self.real_levels, self.real_index, self.real_prior = self._levels(pts.real)
        self.imag_levels, self.imag_index, self.imag_prior = self._levels(pts.imag)
        grid = {(int(a), int(b)) for a, b in zip(self.real_index, self.imag_index)}
        self.separable = (len(grid) == Q
                          and Q == self.real_levels.numel() * self.imag_levels.numel())

    @staticmethod
    def _levels(values: Tensor):
        rounded = torch.round(values * 1e9) / 1e9
        levels, index, counts = torch.unique(rounded, sorted=True, return_inverse=True, return_counts=True)
        return levels, index, counts.double() / values.numel()

    def __repr__(self) -> str:
        return f"Constellation({self.name!r}, Q={self.order}, energy={self.energy:.4f})"

    def points_as(self, dtype: torch.dtype = torch.complex64, device=None) -> Tensor:
        return self.points.to(dtype=dtype, device=device)

    # --- bits <-> indices <-> points -------------------------------------------------
    def _need_bits(self) -> int:
        if self.bits_per_symbol is None:
            raise ValueError(f"{self!r}: order {self.order} is not a power of two, so it has no bit labels")
        return self.bits_per_symbol

    def bit_table(self, device=None) -> Tensor:
        """``(Q, m)`` int64: row q holds the bits of label q, MSB first."""
        m = self._need_bits()
        q = torch.arange(self.order, device=device)
        return (q[:, None] >> torch.arange(m - 1, -1, -1, device=device)) & 1

    def indices_to_bits(self, idx: Tensor) -> Tensor:
        """``(...,)`` int64 indices -> ``(..., m)`` int64 bits, MSB first."""
        m = self._need_bits()
        return (idx[..., None] >> torch.arange(m - 1, -1, -1, device=idx.device)) & 1

    def bits_to_indices(self, bits: Tensor) -> Tensor:
        """``(..., m)`` bits (MSB first) -> ``(...,)`` int64 indices."""
        m = self._need_bits()
        if bits.shape[-1] != m:
            raise ValueError(f"bits: last dimension must be bits_per_symbol={m}, got {bits.shape[-1]}")
        w = 2 ** torch.arange(m - 1, -1, -1, device=bits.device)
        return (bits.long() * w).sum(-1)

    def indices_to_points(self, idx: Tensor, dtype: torch.dtype = torch.complex64) -> Tensor:
        return self.points_as(dtype, idx.device)[idx]

    def nearest(self, x: Tensor) -> Tensor:
        """Index of the nearest point to each complex entry of ``x``."""
        pts = self.points_as(x.dtype if x.is_complex() else torch.complex64, x.device)
        return (x[..., None] - pts).abs().argmin(-1)

    def random_indices(self, shape, generator: torch.Generator, device=None) -> Tensor:
        return torch.randint(0, self.order, tuple(shape), generator=generator, device=device)


def qam(order: int) -> Constellation:
    """Square Gray-labelled QAM of ``order`` in (4, 16, 64, 256), unit average energy."""
    if order not in QAM_ORDERS:
        raise ValueError(f"order must be one of {QAM_ORDERS}, got {order!r}")
    m = int(math.log2(order))
    h = m // 2
    L = 2 ** h
    q = torch.arange(order)
    gray_re, gray_im = q >> h, q & (L - 1)
    lev_re, lev_im = _gray_to_binary(gray_re), _gray_to_binary(gray_im)
    pam = lambda lev: (2 * lev - (L - 1)).double()  # noqa: E731
    pts = torch.complex(pam(lev_re), pam(lev_im)) / math.sqrt(2 * (L * L - 1) / 3)
    return Constellation(pts, name=f"qam{order}")


def from_name(name: str) -> Constellation:
    """``"qam16"``, ``"16qam"``, ``"qpsk"`` -> :func:`qam`."""
    key = name.lower().replace("-", "")
    if key in ("qpsk", "4qam"):
        return qam(4)
    for order in QAM_ORDERS:
        if key in (f"qam{order}", f"{order}qam"):
            return qam(order)
    raise ValueError(f"unknown modulation {name!r}; use one of {', '.join(f'qam{o}' for o in QAM_ORDERS)}")


def as_constellation(c, name: Optional[str] = None) -> Constellation:
    if isinstance(c, Constellation):
        return c
    if isinstance(c, str):
        return from_name(c)
    if isinstance(c, int):
        return qam(c)
    return Constellation(c, name=name or "custom")
