"""On-the-fly training batches: fresh channels, symbols, noise and user masks each step.

Each sample draws its number of users ``k`` from ``{nt_min, nt_min + nt_step, ..., nt}``
(uniformly; with ``nt_dist="triangular"`` from the RE-MIMO paper's triangular law with
its mode at ``nt``, Sec. V-E, discretised; with ``nt_dist="proportional"`` with
``P(k) ∝ k``, the law of the RE-MIMO authors' code) and its SNR uniformly in
``[snr_min, snr_max] + snr_per_user (k - nt)`` dB (a range per number of users, as the
paper's training: more users, higher SNR), or in ``snr_ranges[k]`` when that table is
given (GEPNet's recipe: [10, 30.5] dB for 8 users, [8, 23.5] dB for 4); a random set of ``k`` of the ``nt`` columns transmits (mask True), the
others send nothing (x = 0, their H columns stay random: the detector must ignore them).
Kronecker channels draw each sample's rho in the ``rho_rx``/``rho_tx`` range uniformly or,
with ``rho_dist="triangular"``, from the paper's triangular law with its mode at the top of
the range (Sec. V-B). ``val_nt`` fixes the validation stream's user counts (the paper
validates on Nr/4 and Nr/2 users only); training draws are unaffected. The noise variance
follows the SNR of docs/conventions.md for the ``k`` active users:
``sigma^2 = k Es / (Nr SNR)`` (:func:`mimo_fast.comm.noise_var_from_snr`).

All randomness comes from one CPU ``torch.Generator`` seeded from
``SeedSequence([seed, rank, stream])`` (stream 0 = training, 1 = validation), so every
rank of a data-parallel run draws its own data and a checkpoint that stores
:meth:`BatchGenerator.state_dict` resumes the exact same sequence. Batches are drawn on the
CPU and moved to the training device, so the numbers do not depend on the device.

``train_set`` (the GNN detector's recipe: a fixed set of 300,000 samples) makes the
training stream a fixed set instead of fresh draws: ``ceil(train_set / batch)`` batches,
batch ``i`` always drawn from its own generator (stream ``FIXED_STREAM + i``), visited
once per epoch in an order shuffled per epoch (stream ``SHUFFLE_STREAM + epoch``). The
set's samples keep their batch companions across epochs (a batch is regenerated, not
stored: 300,000 samples of 64x32 channels would take 5 GB); only the order of the
batches changes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

from mimo_fast import comm

TRAIN_STREAM, VAL_STREAM = 0, 1
SHUFFLE_STREAM, FIXED_STREAM = 1 << 20, 1 << 30
NT_DISTS = ("uniform", "triangular", "proportional")


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
    nt_dist: str = "uniform"            # or "triangular": P(k) grows linearly up to nt
    nt_step: int = 1                    # 2 with nt_min 16, nt 32: even counts only
    snr_per_user: float = 0.0           # dB added to the SNR range per user: + snr_per_user (k - nt)
    rho_dist: str = "uniform"           # or "triangular": mode at the top of the rho range
    val_nt: Optional[tuple] = None      # validation stream: these user counts, in turn
    snr_ranges: Optional[dict] = None   # {k: (low, high)} dB per user count (replaces snr_min/max)
    train_set: Optional[int] = None     # fixed training set of this many samples (None: fresh)

    #: options added after the first release: left out of ``to_dict`` at their defaults, so
    #: checkpoints written before them still resume (their run options compare equal)
    _LATER = {"nt_dist": "uniform", "nt_step": 1, "snr_per_user": 0.0, "rho_dist": "uniform", "val_nt": None,
              "snr_ranges": None, "train_set": None}

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
        if self.nt_dist not in NT_DISTS:
            raise ValueError(f"nt_dist must be one of {NT_DISTS}, got {self.nt_dist!r}")
        if self.rho_dist not in ("uniform", "triangular"):
            raise ValueError(f"rho_dist must be 'uniform' or 'triangular', got {self.rho_dist!r}")
        st = self.nt_step
        if isinstance(st, bool) or not isinstance(st, int) or st < 1 or (self.nt - lo) % st:
            raise ValueError(f"nt_step must be a positive int dividing nt - nt_min = {self.nt - lo}, got {st!r}")
        if not math.isfinite(self.snr_per_user):
            raise ValueError(f"snr_per_user must be a finite float, got {self.snr_per_user!r}")
        if self.val_nt is not None:
            vals = tuple(self.val_nt)
            if not vals or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= self.nt for v in vals):
                raise ValueError(f"val_nt must be a non-empty list of ints in [1, nt={self.nt}], got {self.val_nt!r}")
        if self.snr_ranges is not None:
            counts = {int(k) for k in self.user_counts()[0].tolist()}
            table = self.snr_table()
            missing = sorted(counts - set(table))
            if missing:
                raise ValueError(f"snr_ranges has no range for user counts {missing} (it must cover every "
                                 f"count the user-count law draws: {sorted(counts)})")
        t = self.train_set
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise ValueError(f"train_set must be a positive int or None, got {t!r}")
        comm.from_name(self.mod)

    def snr_table(self) -> dict:
        """``snr_ranges`` checked and normalised: ``{k (int): (low, high) (floats)}``."""
        table = {}
        items = self.snr_ranges.items() if isinstance(self.snr_ranges, dict) else self.snr_ranges
        try:
            for k, rng in items:
                lo, hi = (float(v) for v in rng)
                table[int(k)] = (lo, hi)
        except (TypeError, ValueError):
            raise ValueError(f"snr_ranges must map user counts to (low, high) dB, got {self.snr_ranges!r}") from None
        for k, (lo, hi) in table.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"snr_ranges[{k}] must be a finite (low, high) with low <= high, got {(lo, hi)}")
        return table

    def user_counts(self) -> tuple[Tensor, Tensor]:
        """``(values, probabilities)`` of the training user count ``k``. The triangular law
        T(a, b, c = b) of the paper (density rising linearly to its mode at ``nt``) is
        discretised over cells ``[k, k + nt_step)`` of ``[nt_min, nt + nt_step)``:
        P(k) proportional to (j + 1/2) for the j-th value, so every value keeps some mass.
        ``"proportional"``: P(k) proportional to k (the RE-MIMO authors' code)."""
        lo = self.nt if self.nt_min is None else self.nt_min
        vals = torch.arange(lo, self.nt + 1, self.nt_step)
        if self.nt_dist == "uniform":
            p = torch.ones(len(vals), dtype=torch.float64)
        elif self.nt_dist == "proportional":
            p = vals.to(torch.float64)
        else:
            p = torch.arange(len(vals), dtype=torch.float64) + 0.5
        return vals, p / p.sum()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["val_nt"] is not None:
            d["val_nt"] = list(d["val_nt"])
        if d["snr_ranges"] is not None:   # JSON keys are strings: a sorted list of [k, low, high]
            d["snr_ranges"] = [[k, lo, hi] for k, (lo, hi) in sorted(self.snr_table().items())]
        return {k: v for k, v in d.items() if k not in self._LATER or v != self._LATER[k]}


class Batch(NamedTuple):
    y: Tensor          # (B, Nr) complex64
    H: Tensor          # (B, Nr, Nt) complex64
    noise_var: Tensor  # (B,) float32, complex noise variance
    x_idx: Tensor      # (B, Nt) int64 point indices, 0 where masked
    mask: Tensor       # (B, Nt) bool, True = user transmits
    snr_db: Tensor     # (B,) float32

    def to(self, device, real_dtype: Optional[torch.dtype] = None) -> "Batch":
        """On ``device``; with ``real_dtype=torch.float64``, y/H complex128 and noise_var float64."""
        out = Batch(*(t.to(device) for t in self))
        if real_dtype is None or real_dtype == torch.float32:
            return out
        cplx = torch.complex128 if real_dtype == torch.float64 else None
        return out._replace(y=out.y.to(cplx), H=out.H.to(cplx), noise_var=out.noise_var.to(real_dtype))


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
        self.fixed_nt = tuple(cfg.val_nt) if (stream == VAL_STREAM and cfg.val_nt is not None) else None
        self.seed, self.rank = seed, rank
        self.fixed_set = cfg.train_set if stream == TRAIN_STREAM else None

    def __call__(self, batch: int) -> Batch:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        if self.fixed_set is None:
            out = self._draw(batch, self.generator)
        else:
            out = self._draw(*self._fixed_batch(batch))
        self.batches += 1
        return out

    def _fixed_batch(self, batch: int) -> tuple[int, torch.Generator]:
        """(size, generator) of the next batch of the fixed training set (module docstring)."""
        per_epoch = -(-self.fixed_set // batch)
        epoch, pos = divmod(self.batches, per_epoch)
        order = torch.randperm(per_epoch, generator=torch.Generator().manual_seed(
            stream_seed(self.seed, self.rank, SHUFFLE_STREAM + epoch)))
        i = int(order[pos])
        size = min(batch, self.fixed_set - i * batch)
        return size, torch.Generator().manual_seed(stream_seed(self.seed, self.rank, FIXED_STREAM + i))

    def _draw(self, batch: int, g: torch.Generator) -> Batch:
        c = self.cfg
        nt_min = c.nt if c.nt_min is None else c.nt_min
        if c.channel == "kronecker" and c.rho_dist == "triangular":
            H = _kronecker_triangular(batch, c, g)
        else:
            H = comm.draw_channel(c.channel, batch, c.nr, c.nt, g, rho_rx=c.rho_rx, rho_tx=c.rho_tx)
        if self.fixed_nt is not None:    # validation on fixed sizes: each in turn
            k = torch.tensor(self.fixed_nt)[torch.arange(batch) % len(self.fixed_nt)]
        elif c.nt_dist == "uniform" and c.nt_step == 1:   # the original draw (same numbers)
            k = torch.randint(nt_min, c.nt + 1, (batch,), generator=g)
        else:
            vals, p = c.user_counts()
            k = vals[torch.multinomial(p, batch, replacement=True, generator=g)]
        # a random k-subset per sample: the k smallest of nt uniform keys
        rank_of = torch.rand(batch, c.nt, generator=g).argsort(-1).argsort(-1)
        mask = rank_of < k[:, None]
        x_idx = self.constellation.random_indices((batch, c.nt), g).masked_fill(~mask, 0)
        x = self.constellation.indices_to_points(x_idx, H.dtype) * mask
        u = torch.rand(batch, generator=g, dtype=torch.float64)
        if c.snr_ranges is not None:
            table = c.snr_table()
            lo = torch.tensor([table[int(v)][0] for v in k.tolist()], dtype=torch.float64)
            hi = torch.tensor([table[int(v)][1] for v in k.tolist()], dtype=torch.float64)
            snr_db = lo + (hi - lo) * u
        else:
            snr_db = c.snr_min + (c.snr_max - c.snr_min) * u
        if c.snr_per_user:
            snr_db = snr_db + c.snr_per_user * (k - c.nt).double()
        nv = k.double() * self.constellation.energy / (c.nr * 10.0 ** (snr_db / 10.0))
        y = comm.awgn((H @ x[..., None])[..., 0], nv, g)
        return Batch(y, H, nv.float(), x_idx, mask, snr_db.float())

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.batches = int(state["batches"])


def _triangular_rho(rho, batch: int, g: torch.Generator, name: str) -> Optional[Tensor]:
    """Per-sample rho from T(low, high, mode = high) (inverse CDF: low + (high - low) sqrt(u))."""
    if rho is None:
        return None
    lo, hi = (float(rho), float(rho)) if isinstance(rho, (int, float)) else (float(r) for r in rho)
    if not 0.0 <= lo <= hi < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (a value or a (low, high) range), got {rho!r}")
    return lo + (hi - lo) * torch.rand(batch, generator=g, dtype=torch.float64).sqrt()


def _kronecker_triangular(batch: int, c: DataConfig, g: torch.Generator) -> Tensor:
    """:func:`mimo_fast.comm.kronecker` with triangular per-sample rho (same model:
    ``R_rx^{1/2} H_w R_tx^{T/2}``, exponential correlation, Cholesky square roots)."""
    r_rx = _triangular_rho(c.rho_rx, batch, g, "rho_rx")
    r_tx = _triangular_rho(c.rho_tx, batch, g, "rho_tx")
    H = comm.draw_channel("rayleigh", batch, c.nr, c.nt, g, dtype=torch.complex128)
    if r_rx is not None:
        H = torch.linalg.cholesky(comm.exp_correlation(c.nr, r_rx)).to(H.dtype) @ H
    if r_tx is not None:
        H = H @ torch.linalg.cholesky(comm.exp_correlation(c.nt, r_tx)).mT.to(H.dtype)
    return H.to(torch.complex64)


__all__ = ["DataConfig", "Batch", "BatchGenerator", "stream_seed", "TRAIN_STREAM", "VAL_STREAM", "NT_DISTS"]
