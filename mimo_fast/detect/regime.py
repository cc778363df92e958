"""One-time warnings for a detector used outside the regime it was built or trained for.

A detector run where its algorithm is known to fail says so once (a
:class:`RegimeWarning` through :func:`warnings.warn`), instead of silently reporting a
SER near guessing. :func:`mimo_fast.eval.simulate` (and so ``mimo-fast simulate``) checks
every detector of a run before its first point; code that calls detectors directly can
call :func:`check` itself. The conditions (docs/errors.md lists them too):

* ``amp`` (classical AMP) with ``Nr < 2 Nt``: its large-system Gaussian approximation does
  not hold and it stalls at an error floor (measured, 16-QAM: 8x8 SER ~0.05 from 40 dB up,
  4x4 ~0.2, 2x2 ~0.02, where LMMSE is error free).
* ``amp`` on a correlated channel (Kronecker with a non-zero rho): AMP assumes i.i.d.
  entries; it diverges, SER near or above guessing (64x32 16-QAM, rho 0.5: 0.93).
* a learned detector whose weights record (``record["data"]``, written by
  ``mimo-fast train``) shows it was trained on another channel model, a weaker
  correlation than the one asked for, another Nr, or a user count outside the trained
  range (e.g. RE-MIMO trained on Rayleigh, evaluated on Kronecker channels: SER 0.94).

Each distinct condition warns once per process (:func:`reset` forgets them, for tests).
"""
from __future__ import annotations

import warnings
from typing import Optional

_WARNED: set = set()


class RegimeWarning(UserWarning):
    """A detector is used outside the regime it was built or trained for."""


def reset() -> None:
    """Forget which conditions have warned (each warns again once)."""
    _WARNED.clear()


def _rho_max(rho) -> float:
    if rho is None:
        return 0.0
    if isinstance(rho, (int, float)):
        return abs(float(rho))
    return max((abs(float(r)) for r in rho), default=0.0)


def _correlation(channel: Optional[str], rho_rx, rho_tx) -> float:
    """The strongest correlation of a channel model: 0 for Rayleigh (or rho 0)."""
    if channel != "kronecker":
        return 0.0
    return max(_rho_max(rho_rx), _rho_max(rho_tx))


def conditions(det, name: str, *, nr: int, nt: int, channel: str = "rayleigh", rho_rx=None,
               rho_tx=None) -> list:
    """``[(key, message), ...]``: the regime conditions ``det`` (registered as ``name``)
    violates for an ``nr`` x ``nt`` system on ``channel``; empty when none."""
    from mimo_fast.detect.iterative import AMP

    out = []
    corr = _correlation(channel, rho_rx, rho_tx)
    if isinstance(det, AMP):
        if nr < 2 * nt:
            out.append((("amp-ratio", name), (
                f"{name}: Nr/Nt = {nr}/{nt} < 2; AMP's large-system approximation does not hold here "
                "and it stalls at an error floor (16-QAM 8x8: SER ~0.05 from 40 dB up, where LMMSE "
                "is error free). Use ep, oamp, kbest or sphere for such systems (docs/errors.md).")))
        if corr > 0:
            out.append((("amp-correlated", name), (
                f"{name}: correlated channel (kronecker, rho up to {corr:g}); AMP assumes i.i.d. channel "
                "entries and diverges on correlated ones (SER near guessing). Use oamp or ep, which "
                "handle correlated channels (docs/errors.md).")))
    record = getattr(det, "record", None)
    data = record.get("data") if isinstance(record, dict) else None
    if isinstance(data, dict):
        t_channel = data.get("channel", "rayleigh")
        t_corr = _correlation(t_channel, data.get("rho_rx"), data.get("rho_tx"))
        if corr > t_corr + 0.05:
            trained = (f"{t_channel} channels" + (f" with rho up to {t_corr:g}" if t_corr else "")
                       if t_channel == "kronecker" else f"{t_channel} (uncorrelated) channels")
            out.append((("learned-channel", name, round(corr, 3)), (
                f"{name}: evaluated on kronecker channels with rho up to {corr:g}, but its weights were "
                f"trained on {trained}; a learned detector is only as good as its training data (RE-MIMO "
                "trained on Rayleigh: SER ~0.94 on Kronecker). Train or fine-tune on the channel model "
                "you evaluate (mimo-fast train --channel kronecker --rho-rx ... ; docs/errors.md).")))
        t_nr, t_nt = data.get("nr"), data.get("nt")
        t_nt_min = data.get("nt_min") if data.get("nt_min") is not None else t_nt
        if isinstance(t_nr, int) and nr != t_nr:
            out.append((("learned-nr", name, nr), (
                f"{name}: evaluated with Nr = {nr}, but its weights were trained with Nr = {t_nr} "
                "(docs/errors.md).")))
        if isinstance(t_nt, int) and isinstance(t_nt_min, int) and not t_nt_min <= nt <= t_nt:
            span = f"{t_nt}" if t_nt_min == t_nt else f"{t_nt_min}..{t_nt}"
            out.append((("learned-nt", name, nt), (
                f"{name}: evaluated with Nt = {nt} users, but its weights were trained with Nt = {span} "
                "(docs/errors.md).")))
    return out


def check(det, name: Optional[str] = None, *, nr: int, nt: int, channel: str = "rayleigh",
          rho_rx=None, rho_tx=None, stacklevel: int = 2) -> list:
    """Warn (:class:`RegimeWarning`, once per condition and process) for each regime
    condition ``det`` violates; returns the messages of all violated conditions."""
    name = name or getattr(det, "name", type(det).__name__)
    found = conditions(det, name, nr=nr, nt=nt, channel=channel, rho_rx=rho_rx, rho_tx=rho_tx)
    for key, msg in found:
        if key not in _WARNED:
            _WARNED.add(key)
            warnings.warn(msg, RegimeWarning, stacklevel=stacklevel + 1)
    return [msg for _, msg in found]


__all__ = ["RegimeWarning", "check", "conditions", "reset"]
