"""On-the-fly training batches: fresh channels, symbols, noise and user masks each step.

Each sample draws its SNR uniformly in ``[snr_min, snr_max]`` dB and its number of users
``k`` uniformly in ``[nt_min, nt]``; a random set of ``k`` of the ``nt`` columns transmits
(mask True), the others send nothing (x = 0, their H columns stay random: the detector
must ignore them). The noise variance follows DESIGN.md for the ``k`` active users:
``sigma^2 = k Es / (Nr SNR)`` (:func:`mimo_fast.comm.noise_var_from_snr`).

All randomness comes from one CPU ``torch.Generator`` seeded from
``SeedSequence([seed, rank, stream])`` (stream 0 = training, 1 = validation), so every
rank of a data-parallel run draws its own data and a checkpoint that stores
:meth:`BatchGenerator.state_dict` resumes the exact same sequence. Batches are drawn on the
CPU and moved to the training device, so the numbers do not depend on the device.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

from mimo_fast import comm

TRAIN_STREAM, VAL_STREAM = 0, 1


@dataclasses.dataclass
class DataConfig:
    nr: int = 8
    nt: int = 8
    nt_min: Optional[int] = None        # None: always nt users
    mod: str = "qam16"
    snr_min: float = 10.0
    snr_max: float = 20.0
    channel: str = "rayleigh"
    rho_rx: Optional[object] = None     # kronecker: float or (low, high)
    rho_tx: Optional[object] = None

    def validate(self) -> None:
        for name in ("nr", "nt"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        lo = self.nt if self.nt_min is None else self.nt_min
        if isinstance(lo, bool) or not isinstance(lo, int) or not 1 <= lo <= self.nt:
            raise ValueError(f"nt_min must be an int in [1, nt={self.nt}], got {self.nt_min!r}")
        if not self.snr_min <= self.snr_max:
            raise ValueError(f"snr_min must be <= snr_max, got {self.snr_min} > {self.snr_max}")
        if self.channel not in ("rayleigh", "kronecker"):
            raise ValueError(f"channel must be 'rayleigh' or 'kronecker', got {self.channel!r}")
        if self.channel == "rayleigh" and (self.rho_rx is not None or self.rho_tx is not None):
            raise ValueError("rho_rx/rho_tx need channel 'kronecker'")
        comm.from_name(self.mod)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Batch(NamedTuple):
    y: Tensor          # (B, Nr) complex64
    H: Tensor          # (B, Nr, Nt) complex64
    noise_var: Tensor  # (B,) float32, complex noise variance
    x_idx: Tensor      # (B, Nt) int64 point indices, 0 where masked
    mask: Tensor       # (B, Nt) bool, True = user transmits
    snr_db: Tensor     # (B,) float32

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in self))


def stream_seed(seed: int, rank: int, stream: int) -> int:
    """64-bit seed of (seed, rank, stream): independent streams, reproducible."""
    s = np.random.SeedSequence([int(seed), int(rank), int(stream)]).generate_state(2, dtype=np.uint32)
    return int(s[0]) << 32 | int(s[1])


class BatchGenerator:
    """Draws :class:`Batch` es for ``cfg`` from its own generator (see module doc)."""

    def __init__(self, cfg: DataConfig, seed: int, rank: int = 0, stream: int = TRAIN_STREAM):
        cfg.validate()
        self.cfg = cfg
        self.constellation = comm.from_name(cfg.mod)
        self.generator = torch.Generator().manual_seed(stream_seed(seed, rank, stream))
        self.batches = 0

    def __call__(self, batch: int) -> Batch:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        c, g = self.cfg, self.generator
        nt_min = c.nt if c.nt_min is None else c.nt_min
        H = comm.channel(c.channel, batch, c.nr, c.nt, g, rho_rx=c.rho_rx, rho_tx=c.rho_tx)
        k = torch.randint(nt_min, c.nt + 1, (batch,), generator=g)
        # a random k-subset per sample: the k smallest of nt uniform keys
        rank_of = torch.rand(batch, c.nt, generator=g).argsort(-1).argsort(-1)
        mask = rank_of < k[:, None]
        x_idx = self.constellation.random_indices((batch, c.nt), g).masked_fill(~mask, 0)
        x = self.constellation.indices_to_points(x_idx, H.dtype) * mask
        snr_db = c.snr_min + (c.snr_max - c.snr_min) * torch.rand(batch, generator=g, dtype=torch.float64)
        nv = k.double() * self.constellation.energy / (c.nr * 10.0 ** (snr_db / 10.0))
        y = comm.awgn((H @ x[..., None])[..., 0], nv, g)
        self.batches += 1
        return Batch(y, H, nv.float(), x_idx, mask, snr_db.float())

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.batches = int(state["batches"])


__all__ = ["DataConfig", "Batch", "BatchGenerator", "stream_seed", "TRAIN_STREAM", "VAL_STREAM"]
