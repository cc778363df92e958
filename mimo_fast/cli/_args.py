"""Argument types and helpers shared by the subcommands of ``mimo-fast``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional


def rho(text: str):
    """``R`` -> R; ``LOW,HIGH`` -> (LOW, HIGH): a Kronecker correlation or a range of them."""
    parts = [float(p) for p in text.split(",")]
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return tuple(parts)
    raise argparse.ArgumentTypeError(f"expected R or LOW,HIGH, got {text!r}")


def snr_range(text: str):
    """``K:LOW:HIGH`` -> (K, LOW, HIGH): an SNR range in dB for samples with K users."""
    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        return int(parts[0]), float(parts[1]), float(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected USERS:LOW:HIGH (e.g. 8:10:30.5), got {text!r}") from None


def snr_table(ranges) -> Optional[dict]:
    """Repeated ``snr_range`` values as ``{users: (low, high)}`` (None when none were given)."""
    if not ranges:
        return None
    # a later range for the same user count wins (an explicit --snr-range over a preset's)
    return {k: (lo, hi) for k, lo, hi in ranges}


def model_option(text: str):
    """``KEY=VALUE`` -> (key with ``-`` as ``_``, VALUE read as JSON when it parses, else the text)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def fail(command: str, msg: str) -> int:
    """Print ``mimo-fast COMMAND: error: MSG`` on stderr; the exit code of a refused command (2)."""
    print(f"mimo-fast {command}: error: {msg}", file=sys.stderr)
    return 2


__all__ = ["rho", "snr_range", "snr_table", "model_option", "fail"]


def check_json_plot(args) -> None:
    """``--json`` / ``--plot`` checked (folders created) before any work: one JSON file, one
    figure with a known suffix and matplotlib installed, not the same path."""
    import os

    from mimo_fast import outputs
    if args.json:
        outputs.check_file(args.json, "--json")
    if args.plot:
        outputs.check_file(args.plot, "--plot", outputs.PLOT_SUFFIXES)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install 'mimo-fast[sim]'") from None
    if args.json and args.plot and os.path.abspath(args.json) == os.path.abspath(args.plot):
        raise ValueError("--json and --plot name the same file")
