"""Weight files of the learned detectors: safetensors, with the metadata that rebuilds
the model.

A file holds the model's ``state_dict`` (float tensors) and these string metadata keys:

* ``mimo_fast.detector`` — the detector name (``"gepnet"``, ``"oampnet2"``, ...);
* ``mimo_fast.config`` — JSON of ``det.config()`` (constructor options);
* ``mimo_fast.constellation`` — JSON ``{"name": ..., "points": [[re, im], ...]}``;
* ``mimo_fast.nr`` / ``mimo_fast.nt`` — the sizes it was made for (``"null"`` for any);
* ``mimo_fast.record`` — JSON of how it was trained (command, seed, steps, wall-clock,
  validation SER), free-form, shown by ``mimo-fast info``-like listings.

Files are written atomically (a temporary file in the same folder, then ``os.replace``),
so an interrupted write never leaves a truncated file under the final name. Loading
checks the name, the parameter names and shapes, and says which differ; a tensor with a
NaN or infinity, or a metadata field that is not the JSON :func:`save` writes, raises
:class:`WeightsError` naming the file and the tensor or field. A saved config
that lacks a structure option added later gets the value the file was trained with, the
class's ``LEGACY_STRUCTURE`` (:func:`mimo_fast.detect.learned.base.with_legacy`), not the
constructor's current default.

Shipped weights live in ``mimo_fast/weights/`` as ``<name>_<nr>x<nt>_<constellation>.safetensors``.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Optional

import torch
from torch import nn

from mimo_fast.comm import Constellation, as_constellation
from mimo_fast.detect.learned.base import with_legacy

SHIPPED_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "weights"
_PREFIX = "mimo_fast."


class WeightsError(ValueError):
    """A weights file is missing, corrupt, or does not fit the model asked for."""


def _constellation_json(c: Constellation) -> str:
    pts = c.points.to(torch.complex128)
    return json.dumps({"name": c.name, "points": [[float(p.real), float(p.imag)] for p in pts]})


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


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` then move the file to ``path`` in one step."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        # mkstemp makes 0600 (and some writers recreate the file): give the usual mode
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def save(det: nn.Module, path, record: Optional[dict] = None) -> None:
    """Write ``det``'s parameters and the metadata that rebuilds it."""
    from safetensors.torch import save_file
    state = {k: v.detach().cpu().contiguous() for k, v in det.state_dict().items()}
    meta = {
        _PREFIX + "detector": det.name,
        _PREFIX + "config": json.dumps(det.config(), sort_keys=True),
        _PREFIX + "constellation": _constellation_json(det.constellation),
        _PREFIX + "nr": json.dumps(det.nr),
        _PREFIX + "nt": json.dumps(det.nt),
        _PREFIX + "record": json.dumps(record or {}, sort_keys=True),
    }
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_raw(path) -> tuple[dict, dict]:
    """``(state_dict, raw string metadata)`` of a safetensors file, with clear errors for a
    missing or corrupt file (shared with :mod:`mimo_fast.precode.weights`)."""
    from safetensors import safe_open
    path = pathlib.Path(path)
    if not path.is_file():
        raise WeightsError(f"weights: no such file {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise WeightsError(f"weights: {str(path)!r} is not a readable safetensors file ({exc})") from exc
    for key, t in state.items():
        check_finite_tensor(t, f"weights: {str(path)!r}", key)
    return state, raw


def check_finite_tensor(t, where: str, key: str) -> None:
    """A floating tensor with a NaN or infinity raises :class:`WeightsError` naming ``where``
    (the file) and ``key`` (the tensor): such weights load fine but make every output
    garbage (a NaN-filled detector reports SER ~0.95), so they are refused on loading."""
    if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            n = int(bad.sum())
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise WeightsError(f"{where}: tensor {key!r} has {n} non-finite value(s) (first "
                               f"{t[first].item()} at index {first}); the file is corrupt or was written "
                               "by a diverged training run")


def _field(path, key: str, text, kind: str = "json"):
    """Decode metadata field ``key`` of ``path`` or raise :class:`WeightsError` naming both."""
    where = f"weights: {str(path)!r}: metadata field {_PREFIX + key!r}"
    if not isinstance(text, str):
        raise WeightsError(f"{where} is not a string")
    if kind == "str":
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise WeightsError(f"{where} is not valid JSON ({exc})") from None


def _check_meta(path, meta: dict) -> None:
    """The decoded metadata has the types :func:`save` writes; else :class:`WeightsError`
    naming the file and the field."""
    def bad(key, want, got):
        raise WeightsError(f"weights: {str(path)!r}: metadata field {_PREFIX + key!r} must be {want}, got "
                           f"{type(got).__name__} {got!r}"[:400])
    if not meta["detector"]:
        bad("detector", "a detector name", meta["detector"])
    for key in ("config", "record"):
        if key in meta and meta[key] is not None and not isinstance(meta[key], dict):
            bad(key, "a JSON object", meta[key])
    for key in ("nr", "nt"):
        v = meta.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            bad(key, "a positive integer or null", v)


def read(path) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of a weights file, with clear errors for a missing,
    corrupt or foreign file. Metadata values are decoded from JSON."""
    state, raw = read_raw(path)
    if _PREFIX + "detector" not in raw:
        raise WeightsError(f"weights: {str(path)!r} has no mimo_fast metadata; it was not written by "
                           "mimo_fast.detect.learned.weights.save")
    meta = {}
    for k, v in raw.items():
        if not k.startswith(_PREFIX):
            continue
        key = k[len(_PREFIX):]
        meta[key] = _field(path, key, v, "str" if key == "detector" else "json")
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
