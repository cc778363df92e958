"""Weight files of the learned precoders: safetensors with JSON metadata, written and read
by :mod:`mimo_fast.weights_io` (as the detectors' files are).

Metadata keys: ``mimo_fast.precoder`` (``"model-gnn"`` / ``"vanilla-gnn"``),
``mimo_fast.config`` (constructor options), ``mimo_fast.n``, ``mimo_fast.k`` (the K it was
trained for, or a description such as ``"exp4"``), ``mimo_fast.snr_db``, ``mimo_fast.cells`` and
``mimo_fast.record`` (command, wall-clock, samples, epochs, validation SE ratio).
Shipped files: ``mimo_fast/weights/<name>_<n>x<k>_<snr>db.safetensors`` (multi-cell:
``model-gnn-mc_<cells>x<n>x<k>_<snr>db.safetensors``).
"""
from __future__ import annotations

import pathlib
from typing import Optional

from mimo_fast import weights_io
from mimo_fast.weights_io import SHIPPED_DIR, WeightsError

_PREFIX = weights_io.PREFIX


def registry() -> dict:
    from mimo_fast.precode.gnn import VanillaGNN
    from mimo_fast.precode.model_gnn import ModelGNN, ModelGNNEE
    from mimo_fast.precode.multicell import ModelGNNMC
    return {ModelGNN.name: ModelGNN, VanillaGNN.name: VanillaGNN, ModelGNNMC.name: ModelGNNMC,
            ModelGNNEE.name: ModelGNNEE}


def save(model, path, *, n, k, snr_db, cells: int = 1, record: Optional[dict] = None) -> None:
    weights_io.write(path, model.state_dict(), {
        "precoder": model.name, "config": model.config(), "n": n, "k": k, "snr_db": snr_db, "cells": cells,
        "record": record or {}}, text=("precoder",))


def read(path) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` with clear errors for a missing, corrupt or foreign file."""
    return weights_io.read(path, "precoder", "holds no precoder (not written by mimo_fast.precode)")


def load(path, expect: Optional[str] = None):
    """Rebuild the precoder in ``path`` (``expect``: the name asked for; a mismatch is an error)."""
    state, meta = read(path)
    name = meta["precoder"]
    if expect is not None and name != expect:
        raise WeightsError(f"weights: {str(path)!r} holds a {name!r} precoder, not {expect!r}")
    reg = registry()
    if name not in reg:
        raise WeightsError(f"weights: {str(path)!r} holds a {name!r} precoder, unknown to this version")
    try:
        model = reg[name](**(meta.get("config") or {}))
    except (TypeError, ValueError, KeyError) as exc:
        raise WeightsError(f"weights: {str(path)!r}: metadata field {_PREFIX + 'config'!r} does not build a "
                           f"{name} precoder ({type(exc).__name__}: {exc})") from None
    own = model.state_dict()
    bad = sorted(set(own) ^ set(state)) + sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if bad:
        raise WeightsError(f"weights: {str(path)!r} does not fit {name} {meta.get('config')}: {bad}")
    model.load_state_dict(state)
    model.meta = meta
    model.record = meta.get("record") or {}
    return model.eval()


def shipped_name(name: str, n, k, snr_db: float, r_min: Optional[float] = None) -> str:
    """``<name>_<n>x<k>_<snr>db.safetensors``; EE precoders add ``_r<R_min>``."""
    return f"{name}_{n}x{k}_{snr_db:g}db" + ("" if r_min is None else f"_r{r_min:g}") + ".safetensors"


def shipped(name: Optional[str] = None) -> list[str]:
    names = registry() if name is None else [name]
    return sorted(p.name for nm in names for p in SHIPPED_DIR.glob(f"{nm}_*.safetensors"))


def find_shipped(name: str, n: int, k: int, snr_db: float, cells: int = 1,
                 r_min: Optional[float] = None) -> pathlib.Path:
    """The shipped file for exactly (name, n, k, snr_db, cells[, r_min]), or an error listing what
    is shipped. ``r_min`` given: the EE precoder ``<name>-ee`` trained for that R_min."""
    if cells > 1:
        name = name + "-mc" if not name.endswith("-mc") else name
    if r_min is not None:
        name = name + "-ee" if not name.endswith("-ee") else name
    path = SHIPPED_DIR / shipped_name(name, f"{cells}x{n}" if cells > 1 else n, k, snr_db, r_min)
    if path.is_file():
        return path
    have = ", ".join(shipped(name)) or "none"
    ee = "" if r_min is None else f", r_min={r_min:g}"
    ee_args = "" if r_min is None else f" --objective ee --r-min {r_min:g}"
    raise WeightsError(
        f"no shipped weights for precoder {name!r} with cells={cells}, n={n}, k={k}, snr={snr_db:g} dB{ee}; shipped: "
        f"{have}. Train with `mimo-fast train {name.removesuffix('-mc').removesuffix('-ee')} --cells {cells} --n {n} "
        f"--k {k} --snr {snr_db:g}{ee_args} --out DIR` and pass --weights DIR/best.safetensors (a Model-GNN runs at "
        f"any N, K).")


__all__ = ["save", "read", "load", "find_shipped", "shipped", "shipped_name", "WeightsError", "registry"]
