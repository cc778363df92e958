"""Weight files of the learned detectors: safetensors, with the metadata that rebuilds
the model.

A file holds the model's ``state_dict`` (float tensors) and these string metadata keys:

* ``mimo_fast.detector`` — the detector name (``"gepnet"``, ``"oampnet2"``, ...);
* ``mimo_fast.config`` — JSON of ``det.config()`` (constructor options);
* ``mimo_fast.constellation`` — JSON ``{"name": ..., "points": [[re, im], ...]}``;
* ``mimo_fast.nr`` / ``mimo_fast.nt`` — the sizes it was made for (``"null"`` for any);
* ``mimo_fast.record`` — JSON of how it was trained (command, seed, steps, wall-clock,
  validation SER), free-form, shown by ``mimo-fast info``-like listings.

Files are written and read by :mod:`mimo_fast.weights_io` (atomic writes; a tensor with a
NaN or infinity, or a metadata field that is not the JSON :func:`save` writes, raises
:class:`WeightsError` naming the file and the tensor or field). Loading checks the name,
the parameter names and shapes, and says which differ. A saved config
that lacks a structure option added later gets the value the file was trained with, the
class's ``LEGACY_STRUCTURE`` (:func:`mimo_fast.detect.learned.base.with_legacy`), not the
constructor's current default.

Shipped weights live in ``mimo_fast/weights/`` as ``<name>_<nr>x<nt>_<constellation>.safetensors``.
"""
from __future__ import annotations

import json
import pathlib
from typing import Optional

import torch
from torch import nn

from mimo_fast import weights_io
from mimo_fast.comm import Constellation, as_constellation
from mimo_fast.detect.learned.base import with_legacy
# the shared weights IO, re-exported under the names this module always had
from mimo_fast.weights_io import SHIPPED_DIR, WeightsError, atomic_write, check_finite_tensor, read_raw

_PREFIX = weights_io.PREFIX


def _constellation_obj(c: Constellation) -> dict:
    pts = c.points.to(torch.complex128)
    return {"name": c.name, "points": [[float(p.real), float(p.imag)] for p in pts]}


def constellation_from_json(text: str) -> Constellation:
    return _constellation_from_obj(json.loads(text))


def _constellation_from_obj(d) -> Constellation:
    if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.get("points"), list):
        raise TypeError("expected an object with a string 'name' and a list 'points'")
    pts = torch.tensor([complex(re, im) for re, im in d["points"]], dtype=torch.complex128)
    if not pts.numel() or not bool(torch.isfinite(torch.view_as_real(pts)).all()):
        raise ValueError("the points must be a non-empty list of finite [re, im] pairs")
    if d["name"].startswith("qam"):
        c = as_constellation(d["name"])
        if torch.allclose(c.points, pts, atol=1e-9):
            return c
    return Constellation(pts, name=d["name"])


def save(det: nn.Module, path, record: Optional[dict] = None) -> None:
    """Write ``det``'s parameters and the metadata that rebuilds it."""
    weights_io.write(path, det.state_dict(), {
        "detector": det.name, "config": det.config(), "constellation": _constellation_obj(det.constellation),
        "nr": det.nr, "nt": det.nt, "record": record or {}}, text=("detector",))


def _check_meta(path, meta: dict) -> None:
    """The decoded metadata has the types :func:`save` writes; else :class:`WeightsError`
    naming the file and the field."""
    def bad(key, want, got):
        raise WeightsError(f"weights: {str(path)!r}: metadata field {_PREFIX + key!r} must be {want}, got "
                           f"{type(got).__name__} {got!r}"[:400])
    if not meta["detector"]:
        bad("detector", "a detector name", meta["detector"])
    for key in ("nr", "nt"):
        v = meta.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            bad(key, "a positive integer or null", v)


def read(path) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of a weights file, with clear errors for a missing,
    corrupt or foreign file. Metadata values are decoded from JSON."""
    state, meta = weights_io.read(path, "detector", "has no mimo_fast metadata; it was not written by "
                                  "mimo_fast.detect.learned.weights.save")
    _check_meta(path, meta)
    if "constellation" not in meta:
        raise WeightsError(f"weights: {str(path)!r}: metadata field {_PREFIX + 'constellation'!r} is missing")
    try:
        meta["constellation"] = _constellation_from_obj(meta["constellation"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise WeightsError(f"weights: {str(path)!r}: metadata field {_PREFIX + 'constellation'!r} is not "
                           f"{{\"name\": str, \"points\": [[re, im], ...]}} with finite points "
                           f"({type(exc).__name__}: {exc})") from None
    return state, meta


def load(path, expect: Optional[str] = None, registry: Optional[dict] = None, **overrides) -> nn.Module:
    """Rebuild the detector stored in ``path``. ``expect`` = the name the caller asked for
    (a mismatch is an error); ``overrides`` replace constructor options that do not change
    the parameters (``backend``, ``iterations`` of some models)."""
    if registry is None:
        from mimo_fast.detect import REGISTRY as registry
    state, meta = read(path)
    name = meta["detector"]
    if expect is not None and name != expect:
        raise WeightsError(f"weights: {str(path)!r} holds a {name!r} detector, not {expect!r}")
    if name not in registry:
        raise WeightsError(f"weights: {str(path)!r} holds a {name!r} detector, unknown to this version")
    cfg = with_legacy(registry[name], dict(meta.get("config") or {}))
    cfg.update(overrides)
    try:
        det = registry[name](meta["constellation"], nr=meta.get("nr"), nt=meta.get("nt"), **cfg)
    except (TypeError, ValueError, KeyError) as exc:
        given = f" with the options given ({overrides})" if overrides else ""
        raise WeightsError(f"weights: {str(path)!r}: metadata field {_PREFIX + 'config'!r}{given} does not "
                           f"build a {name} detector ({type(exc).__name__}: {exc})") from None
    load_state(det, state, str(path))
    det.record = meta.get("record") or {}
    return det


def load_state(det: nn.Module, state: dict, where: str, optional: tuple = ()) -> None:
    """``load_state_dict`` with an error that lists missing, unexpected and mis-shaped names.
    Names in ``optional`` may be missing (they keep the model's own values)."""
    own = det.state_dict()
    missing = sorted(set(own) - set(state) - set(optional))
    extra = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or extra or shapes:
        parts = [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "",
                 f"shape mismatch {shapes}" if shapes else ""]
        raise WeightsError(f"weights: {where} does not fit {det.name} as configured: "
                           + "; ".join(p for p in parts if p))
    det.load_state_dict({**{k: own[k] for k in optional if k in own and k not in state}, **state})


def shipped_name(name: str, nr: int, nt: int, constellation: Constellation) -> str:
    return f"{name}_{nr}x{nt}_{constellation.name}.safetensors"


def shipped() -> list[str]:
    """File names of the weights shipped with the package."""
    return sorted(p.name for p in SHIPPED_DIR.glob("*.safetensors"))


def find_shipped(name: str, nr: Optional[int], nt: Optional[int], constellation) -> pathlib.Path:
    """The shipped file for (name, nr, nt, constellation). A file trained for more users
    serves fewer (masks); an error lists what is shipped when nothing fits."""
    c = as_constellation(constellation)
    cands = []
    for p in SHIPPED_DIR.glob(f"{name}_*.safetensors"):
        try:
            size, cname = p.stem[len(name) + 1:].split("_", 1)
            f_nr, f_nt = (int(v) for v in size.split("x"))
        except ValueError:
            continue
        if cname != c.name or (nr is not None and f_nr != nr) or (nt is not None and f_nt < nt):
            continue
        cands.append((f_nt, p))
    if not cands:
        have = ", ".join(f for f in shipped() if f.startswith(name + "_")) or "none"
        raise WeightsError(
            f"no shipped weights for detector {name!r} with nr={nr}, nt={nt}, {c.name}; shipped for "
            f"{name}: {have}. Train some with `mimo-fast train {name}` and pass weights=PATH (--weights).")
    return min(cands)[1]


__all__ = ["save", "load", "read", "read_raw", "load_state", "find_shipped", "shipped", "shipped_name",
           "WeightsError", "atomic_write", "SHIPPED_DIR", "constellation_from_json", "check_finite_tensor"]
