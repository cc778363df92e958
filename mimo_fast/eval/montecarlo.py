"""Monte-Carlo SER/BER of detectors over SNR points.

Each SNR point streams batches of fresh channels, symbols and noise until it has seen
``min_errors`` symbol errors or ``max_symbols`` symbols (symbols = vectors x Nt). Every
detector sees the same channels, symbols and noise at a given point (common random
numbers): the generator of point ``i`` on rank ``r`` is seeded from
``SeedSequence([seed, i, r])``, so the same seed gives the same numbers, and ranks draw
disjoint streams. Under ``torch.distributed`` (e.g. ``torchrun``, gloo) each rank runs
``1/world`` of ``min_errors`` and ``max_symbols`` and the counts are summed with
``all_reduce``; the result depends on the world size but is reproducible for a given one.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch

from mimo_fast import comm


@dataclasses.dataclass
class SimConfig:
    nr: int = 8
    nt: int = 8
    mod: str = "qam16"
    channel: str = "rayleigh"
    rho_rx: Optional[object] = None          # float or (low, high)
    rho_tx: Optional[object] = None
    csi_error_var: float = 0.0
    min_errors: int = 500
    max_symbols: int = 1_000_000
    batch: int = 1000
    seed: int = 0
    backend: Optional[str] = None

    def validate(self) -> None:
        for name in ("nr", "nt", "min_errors", "max_symbols", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.csi_error_var < 0:
            raise ValueError(f"csi_error_var must be >= 0, got {self.csi_error_var}")
        if self.channel not in ("rayleigh", "kronecker"):
            raise ValueError(f"channel must be 'rayleigh' or 'kronecker', got {self.channel!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: SNR points ``simulate`` accepts, in dB. Outside, the noise variance ``Nt Es / (Nr SNR)``
#: overflows float32 (below about -380 dB) or is zero (+inf), and well before that the
#: point says nothing a detector comparison needs (every detector guesses, or none errs).
SNR_RANGE_DB = (-100.0, 200.0)


def check_snr(snr_db: Sequence[float], option: str = "--snr") -> list:
    """The SNR points as floats, or ``ValueError`` naming ``option`` and the bad value:
    NaN and +-inf are refused (-inf made a zero SNR, a division by zero; +inf a zero noise
    variance and a JSON ``Infinity``), and so are points outside :data:`SNR_RANGE_DB`."""
    out = []
    lo, hi = SNR_RANGE_DB
    for s in snr_db:
        try:
            v = float(s)
        except (TypeError, ValueError):
            raise ValueError(f"{option}: {s!r} is not a number (SNR in dB)") from None
        if not math.isfinite(v):
            raise ValueError(f"{option}: {v} is not a finite SNR in dB; give points in [{lo:g}, {hi:g}] dB")
        if not lo <= v <= hi:
            raise ValueError(f"{option}: {v:g} dB is outside the supported [{lo:g}, {hi:g}] dB (the noise "
                             "variance would over- or underflow the detectors' float32 arithmetic)")
        out.append(v)
    if not out:
        raise ValueError(f"{option}: give at least one SNR point")
    return out


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def point_generator(seed: int, point: int, rank: int = 0) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(point), int(rank)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def draw_batch(cfg: SimConfig, constellation, batch: int, snr_db: float, g: torch.Generator):
    """One batch: ``(y, H_detector, noise_var, idx)``; H_detector includes the CSI error."""
    H, H_det, nv, idx, n = draw_parts(cfg, constellation, batch, snr_db, g)
    return received(H, constellation, idx, n), H_det, nv, idx


def draw_parts(cfg: SimConfig, constellation, batch: int, snr_db: float, g: torch.Generator):
    """The draws of :func:`draw_batch` before modulation: ``(H, H_detector, noise_var, idx,
    noise)``, so detectors that transmit with other constellations (e2e's learned one) see
    the same channels, messages ``idx`` and noise. The noise variance is set by
    ``constellation``'s energy (the others must have the same, unit, energy)."""
    H = comm.draw_channel(cfg.channel, batch, cfg.nr, cfg.nt, g, rho_rx=cfg.rho_rx, rho_tx=cfg.rho_tx)
    idx = constellation.random_indices((batch, cfg.nt), g)
    nv = comm.noise_var_from_snr(snr_db, cfg.nr, cfg.nt, constellation.energy)
    n = comm.awgn(torch.zeros(batch, cfg.nr, dtype=H.dtype), nv, g)
    H_det = comm.imperfect_csi(H, cfg.csi_error_var, g)
    return H, H_det, nv, idx, n


def received(H, constellation, idx, noise):
    """``y = H x + n`` with ``x`` the points ``idx`` of ``constellation``."""
    x = constellation.indices_to_points(idx, H.dtype)
    return (H @ x[..., None])[..., 0] + noise


def transmit_constellations(detectors: dict, constellation) -> dict:
    """The constellation each detector's users transmit with: ``constellation`` except for
    detectors that learned their own (``e2e``: ``det.constellation``, docs/conventions.md)."""
    out = {}
    for name, det in detectors.items():
        own = getattr(det, "constellation", None) if getattr(det, "transmits_own_constellation", False) else None
        if own is not None:
            if own.order != constellation.order or abs(own.energy - constellation.energy) > 1e-4:
                raise ValueError(f"{name}: its learned constellation has {own.order} points of energy "
                                 f"{own.energy:.4g}; the run's ({constellation.name}) has {constellation.order} "
                                 f"of energy {constellation.energy:.4g}: choose the matching --mod")
            out[name] = own
        else:
            out[name] = constellation
    return out


def run_point(detectors: dict, constellation, cfg: SimConfig, snr_db: float, point: int,
              progress: bool = True) -> list:
    """Counts for every detector at one SNR point. Returns one result dict per detector.
    Every detector sees the same channels, messages and noise; the users transmit with
    :func:`transmit_constellations` (e2e: its learned points)."""
    rank, world = _dist()
    g = point_generator(cfg.seed, point, rank)
    target_err = math.ceil(cfg.min_errors / world)
    target_sym = math.ceil(cfg.max_symbols / world)
    m = constellation.bits_per_symbol or 0
    sends = transmit_constellations(detectors, constellation)
    counts = {n: {"symbol_errors": 0, "bit_errors": 0, "symbols": 0, "seconds": 0.0} for n in detectors}
    active = set(detectors)
    bar = None
    if progress and rank == 0 and _tqdm() is not None:
        bar = _tqdm()(total=target_sym * world, desc=f"SNR {snr_db:g} dB", unit="sym", leave=False,
                   file=sys.stderr, dynamic_ncols=True)
    while active:
        done_sym = max(counts[n]["symbols"] for n in active)
        b = min(cfg.batch, math.ceil((target_sym - done_sym) / cfg.nt))
        H_true, H, nv, idx, n = draw_parts(cfg, constellation, b, snr_db, g)
        ys = {}
        for name in sorted(active):
            c = counts[name]
            key = id(sends[name])
            if key not in ys:
                ys[key] = received(H_true, sends[name], idx, n)
            y = ys[key]
            t0 = time.perf_counter()
            with torch.no_grad():
                hard = detectors[name](y, H, nv).hard
            c["seconds"] += time.perf_counter() - t0
            wrong = hard != idx
            c["symbol_errors"] += int(wrong.sum())
            c["symbols"] += wrong.numel()
            if m:
                c["bit_errors"] += int((constellation.indices_to_bits(hard) != constellation.indices_to_bits(idx)).sum())
            if c["symbol_errors"] >= target_err or c["symbols"] >= target_sym:
                active.discard(name)
        if bar is not None:
            bar.update(b * cfg.nt * world)
            bar.set_postfix(errors={n: counts[n]["symbol_errors"] for n in detectors}, refresh=False)
    if bar is not None:
        bar.close()
    if world > 1:
        names = list(detectors)
        t = torch.tensor([[counts[n][k] for k in ("symbol_errors", "bit_errors", "symbols")] for n in names],
                         dtype=torch.float64)
        torch.distributed.all_reduce(t)
        secs = torch.tensor([counts[n]["seconds"] for n in names], dtype=torch.float64)
        torch.distributed.all_reduce(secs, op=torch.distributed.ReduceOp.MAX)
        for i, n in enumerate(names):
            counts[n].update(symbol_errors=int(t[i, 0]), bit_errors=int(t[i, 1]), symbols=int(t[i, 2]),
                             seconds=float(secs[i]))
    out = []
    for name in detectors:
        c = counts[name]
        out.append({
            "detector": name, "snr_db": float(snr_db),
            "ser": c["symbol_errors"] / c["symbols"],
            "ber": c["bit_errors"] / (c["symbols"] * m) if m else None,
            "symbol_errors": c["symbol_errors"], "symbols": c["symbols"],
            "bit_errors": c["bit_errors"], "seconds": round(c["seconds"], 6),
        })
    return out


def simulate(detectors: dict, constellation, cfg: SimConfig, snr_db: Sequence[float],
             progress: bool = True, *, done: Optional[dict] = None, on_point=None) -> list:
    """SER/BER of each detector (``{name: module}``) at each SNR (dB). Results are
    ordered by detector, then SNR; ``seconds`` is the detector's own time at that point
    (the slowest rank's under torch.distributed).

    ``done``: ``{point index: [result dicts]}`` of points already run (a resumed run): they
    are not run again. Point ``i`` always draws from its own generator
    (:func:`point_generator`), so a resumed run gives the numbers an uninterrupted one
    would. ``on_point(results, points)`` is called after each point completes with the
    results of every point finished so far, in the final order, and their indices (to
    write partial results)."""
    cfg.validate()
    snr_db = check_snr(snr_db)
    constellation = comm.as_constellation(constellation)
    from mimo_fast.detect import regime
    for name, det in detectors.items():   # a one-time warning where a detector is out of its regime
        regime.check(det, name, nr=cfg.nr, nt=cfg.nt, channel=cfg.channel, rho_rx=cfg.rho_rx,
                     rho_tx=cfg.rho_tx, stacklevel=2)
    per_point = dict(done or {})

    def ordered():
        return [r for name in detectors for i in sorted(per_point) for r in per_point[i] if r["detector"] == name]

    for i, s in enumerate(snr_db):
        if i in per_point:
            continue
        per_point[i] = run_point(detectors, constellation, cfg, s, i, progress)
        if on_point is not None:
            on_point(ordered(), sorted(per_point))
    return ordered()


def format_table(results: list) -> str:
    head = f"{'detector':<10} {'snr_db':>7} {'ser':>11} {'ber':>11} {'sym_err':>9} {'symbols':>11} {'seconds':>9}"
    rows = [head, "-" * len(head)]
    for r in results:
        ber = f"{r['ber']:.4e}" if r["ber"] is not None else "-"
        rows.append(f"{r['detector']:<10} {r['snr_db']:>7.2f} {r['ser']:>11.4e} {ber:>11} "
                    f"{r['symbol_errors']:>9d} {r['symbols']:>11d} {r['seconds']:>9.3f}")
    return "\n".join(rows)


def _tqdm():
    """tqdm's class, or None when it is not installed (then no progress bar is shown)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def plot(results: list, path: str, title: str = "", bounds: Optional[dict] = None) -> None:
    """SER vs SNR, one line per detector, log scale, PNG via the Agg backend. ``bounds``:
    ``{label: [{"snr_db", "ser"}, ...]}`` drawn as dashed black lines (e.g. the MFB)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'mimo-fast[sim]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in dict.fromkeys(r["detector"] for r in results):
        pts = [(r["snr_db"], r["ser"]) for r in results if r["detector"] == name]
        xs, ys = zip(*pts)
        ax.semilogy(xs, [y if y > 0 else float("nan") for y in ys], marker="o", label=name)
    for name, pts in (bounds or {}).items():
        ax.semilogy([b["snr_db"] for b in pts], [b["ser"] for b in pts], "k--", label=name.upper())
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("SER")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    from mimo_fast.outputs import save_figure
    try:
        save_figure(fig, path, dpi=120)     # atomic: never a half-written image
    finally:
        plt.close(fig)
