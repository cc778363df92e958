"""Coded BER/BLER over Sionna's 5G LDPC code: :func:`run_coded` (the command: :mod:`mimo_fast.cli.coded`).

    mimo-fast coded --nr 8 --nt 8 --mod qam16 --detector lmmse ep --snr 10 12 \
        [--k 512 --n 1024 --llr maxlog|app --decoder-iterations 20] \
        [--channel rayleigh|kronecker|tdl --rho-rx R --rho-tx R --csi-error-var E] \
        [--tdl-model A --delay-spread 1e-7 --fft-size 72] \
        [--min-block-errors 100 --max-blocks 10000 --batch 16 --seed S] [--json out.json] [--plot out.png]

The chain, per SNR point (every detector sees the same bits, channels and noise):

1. info bits ``u (F, Nt, k)``: each of the ``Nt`` users sends its own codeword per frame;
2. ``sionna.phy.fec.ldpc.LDPC5GEncoder(k, n)`` (5G NR LDPC with rate matching; default
   k = 512, n = 1024: rate 1/2, base graph 2, no output interleaver) -> ``c (F, Nt, n)``;
3. mimo_fast's QAM labels (``m`` bits per point, MSB first, docs/conventions.md): each
   codeword becomes ``U = n / m`` symbols, sent over ``U`` channel uses; channel use ``t``
   of frame ``f`` is one vector ``y = H x + w`` of the ``Nt`` users' ``t``-th symbols;
4. the detector's bit LLRs ``log P(b=1)/P(b=0)`` (``--llr maxlog|app``; Sionna's decoder
   takes the same sign) -> ``LDPC5GDecoder`` (boxplus-phi, ``--decoder-iterations``) -> ``u_hat``.

A *block* is one codeword: BLER = codewords with any wrong info bit / codewords, BER = wrong
info bits / info bits. A detector stops at a point after ``min_block_errors`` block errors
or ``max_blocks`` blocks (checked per batch of ``batch`` frames = ``batch * Nt`` blocks).

Channels: ``rayleigh`` (default) and ``kronecker`` are mimo_fast's (:mod:`mimo_fast.comm`),
a fresh ``H`` for every channel use (fast fading: each codeword sees ``U`` independent
channels, as in Sionna's MIMO tutorial). ``tdl``: Sionna's 3GPP TR 38.901 TDL model
(``--tdl-model``, ``--delay-spread``, 3.5 GHz, static) sampled on an OFDM grid of 14
symbols x ``--fft-size`` subcarriers at 30 kHz, normalised per grid, each resource element
a flat ``Nr x Nt`` channel; codewords fill the grids subcarrier first, so one codeword
sees the grid's frequency selectivity.

SNR is mimo_fast's (:mod:`mimo_fast.comm.channel`): ``E||Hx||^2 / E||n||^2`` with
channel entries of variance ``1/Nr`` (the TDL grid is divided by ``sqrt(Nr)`` for that),
i.e. noise variance ``Nt Es / (Nr SNR)``; Eb/N0 is not used.

Seeds: point ``i`` draws from :func:`mimo_fast.eval.montecarlo.point_generator` ``(seed, i)``;
for ``tdl`` Sionna's global seed (``sionna.phy.config.seed``) is set from that generator at
the start of the point, so runs repeat exactly. Needs the ``[sionna]`` extra.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Optional, Sequence

import torch

from mimo_fast import comm
from mimo_fast.eval.montecarlo import _tqdm, check_snr, point_generator, received, transmit_constellations

CHANNELS = ("rayleigh", "kronecker", "tdl")
LLR_METHODS = ("maxlog", "app")


def _sionna():
    try:
        import sionna.phy  # noqa: F401
    except ImportError as e:
        raise ImportError("coded simulation needs NVIDIA Sionna PHY (the 5G LDPC code): pip install "
                          f"'mimo-fast[sionna]' (sionna-no-rt>=2.2, Python >= 3.11); import failed: {e}") from e


@dataclasses.dataclass
class CodedConfig:
    nr: int = 8
    nt: int = 8
    mod: str = "qam16"
    k: int = 512
    n: int = 1024
    llr: str = "maxlog"
    decoder_iterations: int = 20
    channel: str = "rayleigh"
    rho_rx: Optional[object] = None
    rho_tx: Optional[object] = None
    csi_error_var: float = 0.0
    tdl_model: str = "A"
    delay_spread: float = 100e-9
    fft_size: int = 72
    min_block_errors: int = 100
    max_blocks: int = 10_000
    batch: int = 16
    seed: int = 0
    backend: Optional[str] = None

    def validate(self, constellation=None) -> None:
        for name in ("nr", "nt", "k", "n", "decoder_iterations", "fft_size", "min_block_errors", "max_blocks",
                     "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.llr not in LLR_METHODS:
            raise ValueError(f"llr must be one of {LLR_METHODS}, got {self.llr!r}")
        if self.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}, got {self.channel!r}")
        if self.channel != "kronecker" and (self.rho_rx is not None or self.rho_tx is not None):
            raise ValueError("rho_rx/rho_tx need channel 'kronecker'")
        if self.csi_error_var < 0:
            raise ValueError(f"csi_error_var must be >= 0, got {self.csi_error_var}")
        m = comm.as_constellation(constellation or self.mod).bits_per_symbol
        if self.n % m:
            raise ValueError(f"n must be a multiple of the {m} bits per symbol of {self.mod}, got n={self.n}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_code(k: int, n: int, iterations: int = 20):
    """``(LDPC5GEncoder(k, n), LDPC5GDecoder(encoder, num_iter=iterations))``; an invalid
    (k, n) is a ``ValueError`` naming both."""
    _sionna()
    from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder
    try:
        enc = LDPC5GEncoder(k=k, n=n)
    except (ValueError, TypeError, AssertionError) as e:
        raise ValueError(f"k={k}, n={n}: not a 5G LDPC code Sionna builds ({e})") from None
    return enc, LDPC5GDecoder(enc, num_iter=iterations, hard_out=True, return_infobits=True)


class TDLGrid:
    """Flat per-resource-element channels ``(count, Nr, Nt)`` from Sionna's TDL model on an
    OFDM grid (module doc), scaled to mimo_fast's entry variance ``1/Nr``."""

    def __init__(self, cfg: CodedConfig):
        _sionna()
        from sionna.phy.channel import GenerateOFDMChannel
        from sionna.phy.channel.tr38901 import TDL
        from sionna.phy.ofdm import ResourceGrid
        rg = ResourceGrid(num_ofdm_symbols=14, fft_size=cfg.fft_size, subcarrier_spacing=30e3, num_tx=1,
                          num_streams_per_tx=cfg.nt)
        try:
            tdl = TDL(cfg.tdl_model, cfg.delay_spread, 3.5e9, num_rx_ant=cfg.nr, num_tx_ant=cfg.nt)
        except (ValueError, TypeError, AssertionError, KeyError) as e:
            raise ValueError(f"tdl_model {cfg.tdl_model!r} / delay_spread {cfg.delay_spread}: {e}") from None
        self.gen = GenerateOFDMChannel(tdl, rg, normalize_channel=True)
        self.per_grid, self.nr = 14 * cfg.fft_size, cfg.nr

    def __call__(self, count: int) -> torch.Tensor:
        h = self.gen(math.ceil(count / self.per_grid))             # [b, 1, Nr, 1, Nt, S, F]
        h = h[:, 0, :, 0].permute(0, 3, 4, 1, 2)                    # [b, S, F, Nr, Nt]
        return (h.reshape(-1, *h.shape[-2:])[:count] / math.sqrt(self.nr)).to(torch.complex64)


@dataclasses.dataclass
class Frames:
    """One batch: info bits ``u (F, Nt, k)``, code bits ``c (F, Nt, n)``, symbol labels
    ``idx (F*U, Nt)`` (vector ``f*U + t`` = channel use ``t`` of frame ``f``), true and
    detector channels ``(F*U, Nr, Nt)``, noise variance and noise ``(F*U, Nr)``."""
    u: torch.Tensor
    c: torch.Tensor
    idx: torch.Tensor
    H: torch.Tensor
    H_det: torch.Tensor
    noise_var: float
    noise: torch.Tensor


def draw_frames(cfg: CodedConfig, constellation, encoder, frames: int, snr_db: float, g: torch.Generator,
                tdl: Optional[TDLGrid] = None) -> Frames:
    m = constellation.bits_per_symbol
    u = torch.randint(0, 2, (frames, cfg.nt, cfg.k), generator=g).float()
    c = encoder(u)
    U = cfg.n // m
    idx = constellation.bits_to_indices(c.reshape(frames, cfg.nt, U, m).long())
    idx = idx.permute(0, 2, 1).reshape(frames * U, cfg.nt)
    if tdl is not None:
        H = tdl(frames * U)
    else:
        H = comm.draw_channel(cfg.channel, frames * U, cfg.nr, cfg.nt, g, rho_rx=cfg.rho_rx, rho_tx=cfg.rho_tx)
    nv = comm.noise_var_from_snr(snr_db, cfg.nr, cfg.nt, constellation.energy)
    noise = comm.awgn(torch.zeros(frames * U, cfg.nr, dtype=H.dtype), nv, g)
    return Frames(u, c, idx, H, comm.imperfect_csi(H, cfg.csi_error_var, g), nv, noise)


def codeword_llrs(llr: torch.Tensor, frames: int, nt: int) -> torch.Tensor:
    """Detector LLRs ``(F*U, Nt, m)`` -> codeword order ``(F, Nt, U*m)``."""
    U, m = llr.shape[0] // frames, llr.shape[-1]
    return llr.reshape(frames, U, nt, m).permute(0, 2, 1, 3).reshape(frames, nt, U * m)


def run_coded_point(detectors: dict, constellation, cfg: CodedConfig, snr_db: float, point: int,
                    code=None, progress: bool = True) -> list:
    """BER/BLER of every detector (``{name: mimo_fast detector}``) at one SNR point."""
    enc, dec = code or make_code(cfg.k, cfg.n, cfg.decoder_iterations)
    g = point_generator(cfg.seed, point)
    tdl = None
    if cfg.channel == "tdl":
        from sionna.phy import config
        config.seed = int(torch.randint(0, 2 ** 62, (1,), generator=g))
        tdl = TDLGrid(cfg)
    sends = transmit_constellations(detectors, constellation)
    keys = ("bit_errors", "bits", "block_errors", "blocks")
    counts = {d: dict.fromkeys(keys, 0) | {"seconds": 0.0, "decoder_seconds": 0.0} for d in detectors}
    active = set(detectors)
    bar = _tqdm()(total=cfg.max_blocks, desc=f"SNR {snr_db:g} dB", unit="blk", leave=False, file=sys.stderr,
                  dynamic_ncols=True) if progress and _tqdm() is not None else None
    while active:
        done = max(counts[d]["blocks"] for d in active)
        frames = min(cfg.batch, math.ceil((cfg.max_blocks - done) / cfg.nt))
        with torch.no_grad():
            fr = draw_frames(cfg, constellation, enc, frames, snr_db, g, tdl)
            ys = {}
            for name in sorted(active):
                send = sends[name]
                if id(send) not in ys:
                    ys[id(send)] = received(fr.H, send, fr.idx, fr.noise)
                c = counts[name]
                t0 = time.perf_counter()
                llr = detectors[name](ys[id(send)], fr.H_det, fr.noise_var).llr(cfg.llr)
                t1 = time.perf_counter()
                u_hat = dec(codeword_llrs(llr, frames, cfg.nt).float())
                c["seconds"] += t1 - t0
                c["decoder_seconds"] += time.perf_counter() - t1
                wrong = u_hat != fr.u
                c["bit_errors"] += int(wrong.sum())
                c["bits"] += wrong.numel()
                c["block_errors"] += int(wrong.any(-1).sum())
                c["blocks"] += frames * cfg.nt
                if c["block_errors"] >= cfg.min_block_errors or c["blocks"] >= cfg.max_blocks:
                    active.discard(name)
        if bar is not None:
            bar.update(frames * cfg.nt)
            bar.set_postfix(block_errors={d: counts[d]["block_errors"] for d in detectors}, refresh=False)
    if bar is not None:
        bar.close()
    return [{"detector": d, "snr_db": float(snr_db), "ber": c["bit_errors"] / c["bits"],
             "bler": c["block_errors"] / c["blocks"], **{k: c[k] for k in keys},
             "seconds": round(c["seconds"], 6), "decoder_seconds": round(c["decoder_seconds"], 6)}
            for d, c in counts.items()]


def run_coded(detectors: dict, constellation, cfg: CodedConfig, snr_db: Sequence[float], progress: bool = True,
              on_point=None) -> list:
    """:func:`run_coded_point` at each SNR (dB); results ordered by detector, then SNR.
    ``on_point(results_so_far, points_done)`` after each point (to write partial results)."""
    constellation = comm.as_constellation(constellation)
    cfg.validate(constellation)
    snr_db = check_snr(snr_db)
    from mimo_fast.detect import regime
    for name, det in detectors.items():
        regime.check(det, name, nr=cfg.nr, nt=cfg.nt, channel=cfg.channel, rho_rx=cfg.rho_rx, rho_tx=cfg.rho_tx,
                     stacklevel=2)
    code = make_code(cfg.k, cfg.n, cfg.decoder_iterations)
    per_point = {}
    for i, s in enumerate(snr_db):
        per_point[i] = run_coded_point(detectors, constellation, cfg, s, i, code, progress)
        if on_point is not None:
            on_point([r for d in detectors for j in sorted(per_point) for r in per_point[j] if r["detector"] == d],
                     sorted(per_point))
    return [r for d in detectors for j in sorted(per_point) for r in per_point[j] if r["detector"] == d]


def format_table(results: list) -> str:
    head = f"{'detector':<10} {'snr_db':>7} {'ber':>11} {'bler':>11} {'blk_err':>8} {'blocks':>8} {'seconds':>9}"
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(f"{r['detector']:<10} {r['snr_db']:>7.2f} {r['ber']:>11.4e} {r['bler']:>11.4e} "
                    f"{r['block_errors']:>8d} {r['blocks']:>8d} {r['seconds']:>9.3f}")
    return "\n".join(rows)


def plot(results: list, path: str, title: str = "") -> None:
    """BLER (solid) and BER (dashed) vs SNR, one colour per detector, log scale."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'mimo-fast[sim]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mimo_fast.outputs import save_figure
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, name in enumerate(dict.fromkeys(r["detector"] for r in results)):
        rows = [r for r in results if r["detector"] == name]
        xs = [r["snr_db"] for r in rows]
        for key, style in (("bler", "-"), ("ber", "--")):
            ax.semilogy(xs, [r[key] if r[key] > 0 else float("nan") for r in rows], style, marker="o",
                        color=f"C{i}", label=f"{name} {key.upper()}")
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("BLER / BER")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)


# --- the command ------------------------------------------------------------------------


__all__ = ["CodedConfig", "run_coded", "run_coded_point", "make_code", "draw_frames", "codeword_llrs", "Frames",
           "TDLGrid", "format_table", "plot", "CHANNELS", "LLR_METHODS"]
