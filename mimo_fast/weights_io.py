"""Reading and writing weight files: the one module that touches safetensors, shared by
the detectors (:mod:`mimo_fast.detect.learned.weights`), the precoders
(:mod:`mimo_fast.precode.weights`) and training (:mod:`mimo_fast.train.checkpoint`).

A weights file is a safetensors file: the model's ``state_dict`` plus string metadata,
every key ``mimo_fast.<field>`` and every value JSON (``json.dumps(..., sort_keys=True)``)
except the few plain-text fields a caller names (the model's name). What the fields are
is the callers' business; this module writes them atomically (a temporary file in the
same folder, then ``os.replace``: an interrupted write never leaves a truncated file
under the final name), reads them back with errors that name the file and the field, and
refuses a tensor with a NaN or infinity (such weights load fine but make every output
garbage). Every problem raises :class:`WeightsError` (a ``ValueError``).
"""
from __future__ import annotations

import json
import pathlib
from typing import Iterable, Mapping, Optional

import torch

from mimo_fast.outputs import atomic_write

#: the folder of the weights shipped with the package (``mimo_fast/weights/``)
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / "weights"
#: every metadata key written by mimo_fast starts with this
PREFIX = "mimo_fast."


class WeightsError(ValueError):
    """A weights file is missing, corrupt, or does not fit the model asked for."""


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


def write(path, state: Mapping[str, torch.Tensor], fields: Mapping[str, object], text: Iterable[str] = ()) -> None:
    """Write ``state`` (detached, on the CPU, contiguous) and ``fields`` as metadata
    ``mimo_fast.<field>``: JSON, except the fields named in ``text`` (strings kept as they are)."""
    from safetensors.torch import save_file
    text = set(text)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {PREFIX + k: (v if k in text else json.dumps(v, sort_keys=True)) for k, v in fields.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_raw(path) -> tuple[dict, dict]:
    """``(state_dict, raw string metadata)`` of a safetensors file, with clear errors for a
    missing or corrupt file or a non-finite tensor."""
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


def decode_field(path, key: str, value, kind: str = "json"):
    """Metadata field ``key`` of ``path`` (``kind`` ``"json"`` or ``"str"``), or
    :class:`WeightsError` naming both."""
    where = f"weights: {str(path)!r}: metadata field {PREFIX + key!r}"
    if not isinstance(value, str):
        raise WeightsError(f"{where} is not a string")
    if kind == "str":
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise WeightsError(f"{where} is not valid JSON ({exc})") from None


def read(path, name_field: str, foreign: str, objects: Iterable[str] = ("config", "record"),
         text: Optional[Iterable[str]] = None) -> tuple[dict, dict]:
    """``(state_dict, fields)`` of a file that :func:`write` wrote with a model name under
    ``name_field``: every ``mimo_fast.*`` field decoded (``name_field`` and ``text`` as
    plain strings, the rest JSON). A file without ``name_field`` raises
    :class:`WeightsError` ending in ``foreign`` (why it is not one of the caller's); a field
    in ``objects`` that is not a JSON object (or null) is refused."""
    state, raw = read_raw(path)
    if PREFIX + name_field not in raw:
        raise WeightsError(f"weights: {str(path)!r} {foreign}")
    plain = {name_field, *(text or ())}
    fields = {k[len(PREFIX):]: decode_field(path, k[len(PREFIX):], v, "str" if k[len(PREFIX):] in plain else "json")
              for k, v in raw.items() if k.startswith(PREFIX)}
    for key in objects:
        v = fields.get(key)
        if v is not None and not isinstance(v, dict):
            raise WeightsError(f"weights: {str(path)!r}: metadata field {PREFIX + key!r} must be a JSON object, "
                               f"got {type(v).__name__} {v!r}"[:400])
    return state, fields


__all__ = ["WeightsError", "SHIPPED_DIR", "PREFIX", "atomic_write", "check_finite_tensor", "write", "read_raw",
           "decode_field", "read"]
