"""Training checkpoints: two files, each written atomically (:mod:`mimo_fast.weights_io`).

* ``DIR/last.safetensors`` — the model, as the model's own weights file (a detector's via
  :func:`mimo_fast.detect.learned.weights.save`, loadable by ``detect.make(name, ...,
  weights=PATH)``; a precoder's via :func:`mimo_fast.precode.weights.save`); its
  ``record`` holds the step it was written at.
* ``DIR/last.state.pt`` — everything else a resumed run needs, loadable with
  ``torch.load(path, weights_only=True)`` (tensors, numbers, strings, lists, dicts only):
  step counter, optimizer (and scheduler) ``state_dict``, for detectors every rank's
  data-generator and RNG states, best validation metric, cumulative wall-clock, and the
  options that define the run (a resume with different ones would not continue the same run).

The pair is written state first, then weights (:func:`save_pair`); both carry the step,
and :func:`check_steps` refuses a pair whose steps differ (a crash between the two writes).
"""
from __future__ import annotations

import pathlib
import random
from typing import Optional

import torch

from mimo_fast import weights_io
from mimo_fast.detect.learned import weights

FORMAT = 1
LAST_WEIGHTS, LAST_STATE, BEST_WEIGHTS, LOG = "last.safetensors", "last.state.pt", "best.safetensors", "log.jsonl"


class CheckpointError(weights_io.WeightsError):
    """A checkpoint is missing, corrupt, inconsistent, or belongs to a different run (a
    :class:`~mimo_fast.weights_io.WeightsError`, so one ``except`` catches
    every weights and checkpoint loading problem)."""


def _check_state_values(obj, path, where: str = "") -> None:
    """Every floating tensor in the training state (optimizer moments, ...) finite, else
    :class:`CheckpointError` naming the file and the field (``optimizer.state.3.exp_avg``)."""
    if isinstance(obj, torch.Tensor):
        try:
            weights_io.check_finite_tensor(obj, f"--resume: {str(path)!r}", where or "(root)")
        except weights_io.WeightsError as exc:
            raise CheckpointError(str(exc)) from None
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_state_values(v, path, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_state_values(v, path, f"{where}.{i}" if where else str(i))


def rng_state(device: torch.device) -> dict:
    """This process's global RNG states (torch CPU, CUDA of ``device``, Python's)."""
    out = {"torch": torch.get_rng_state(), "python": list(_py_state())}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _py_state():
    version, internal, gauss = random.getstate()
    return version, list(internal), gauss


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_pair(out_dir, state: dict, write_weights) -> None:
    """Write ``last.state.pt`` then, with ``write_weights(path)``, ``last.safetensors``
    (both atomic; the weights' record must carry ``state["step"]``)."""
    out = pathlib.Path(out_dir)
    state = dict(state, format=FORMAT)
    weights_io.atomic_write(out / LAST_STATE, lambda tmp: torch.save(state, tmp))
    write_weights(out / LAST_WEIGHTS)


def save(out_dir, model, state: dict, record: dict) -> None:
    """A detector's checkpoint: ``last.state.pt`` then ``last.safetensors`` (both atomic)."""
    save_pair(out_dir, state, lambda path: weights.save(model, path, dict(record, step=state["step"])))


def save_best(out_dir, model, record: dict) -> None:
    weights.save(model, pathlib.Path(out_dir) / BEST_WEIGHTS, record)


def exists(out_dir) -> bool:
    out = pathlib.Path(out_dir)
    return (out / LAST_STATE).exists() or (out / LAST_WEIGHTS).exists()


def load_state(out_dir, upgrade=None) -> dict:
    """``DIR/last.state.pt``'s dict, after checking that both files of the pair exist and
    the state is a readable training state with a step and finite tensors. ``upgrade``
    (optional) turns a state written by an older version into this format first."""
    out = pathlib.Path(out_dir)
    state_path = out / LAST_STATE
    for p in (state_path, out / LAST_WEIGHTS):
        if not p.is_file():
            raise CheckpointError(f"--resume: {str(p)!r} does not exist; nothing to resume in {str(out)!r}")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"--resume: {str(state_path)!r} is not a readable training state ({exc})") from exc
    if upgrade is not None and isinstance(state, dict):
        state = upgrade(state)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"--resume: {str(state_path)!r} is not a mimo_fast training state (format {FORMAT})")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"--resume: {str(state_path)!r}: field 'step' must be a non-negative int, got {step!r}")
    _check_state_values(state, state_path)
    return state


def check_steps(out_dir, state: dict, step_weights) -> None:
    """The weights of the pair were written at the state's step (else the run was
    interrupted between the two writes)."""
    out = pathlib.Path(out_dir)
    if step_weights != state.get("step"):
        raise CheckpointError(
            f"--resume: {str(out / LAST_WEIGHTS)!r} is from step {step_weights} but {str(out / LAST_STATE)!r} "
            f"from step {state.get('step')} (interrupted while writing the pair); resume from an intact copy")


def load(out_dir, model) -> dict:
    """Load ``DIR/last.safetensors`` into the detector ``model`` and return
    ``DIR/last.state.pt``'s dict, after checking that the pair belongs together and fits ``model``."""
    state = load_state(out_dir)
    load_weights(out_dir, model, state)
    return state


def load_weights(out_dir, model, state: dict) -> None:
    """Load ``DIR/last.safetensors`` into the detector ``model``, after checking that it
    holds this model, built the same way, and was written at ``state``'s step."""
    out = pathlib.Path(out_dir)
    w_path = out / LAST_WEIGHTS
    params, meta = weights.read(w_path)
    if meta["detector"] != model.name:
        raise CheckpointError(f"--resume: {str(w_path)!r} holds a {meta['detector']!r} model, this run "
                              f"trains {model.name!r}")
    cfg = model.config()
    saved = _with_defaults(model, meta.get("config"))
    if saved != _jsonish(cfg) or meta.get("nr") != model.nr or meta.get("nt") != model.nt:
        raise CheckpointError(
            f"--resume: {str(w_path)!r} was trained with nr={meta.get('nr')}, nt={meta.get('nt')}, options "
            f"{meta.get('config')}; this run builds nr={model.nr}, nt={model.nt}, options {_jsonish(cfg)}")
    check_steps(out, state, (meta.get("record") or {}).get("step"))
    # load_state_dict copies into the existing parameters, onto their device
    weights.load_state(model, params, str(w_path))


def _with_defaults(model, saved):
    """The saved options, with any the file lacks filled in at the value it was trained with:
    a checkpoint written before an option existed (e.g. gepnet's ``cavity_skip``) was trained
    at that option's default, so it still resumes; except for the structure options whose
    default changed later (the class's ``LEGACY_STRUCTURE``, e.g. gepnet's
    ``message_out_act``), which get their legacy value, so such a checkpoint resumes only
    into a model built with the structure it was trained with."""
    if not isinstance(saved, dict):
        return saved
    from mimo_fast.detect.learned.base import with_legacy
    saved = with_legacy(type(model), saved)
    import inspect
    defaults = {}   # the nearest class's default wins (subclasses pass options on with **kw)
    for cls in reversed(type(model).__mro__):
        init = cls.__dict__.get("__init__")
        if init is not None:
            for k, p in inspect.signature(init).parameters.items():
                if p.default is not inspect.Parameter.empty:
                    defaults[k] = p.default
    full = dict(saved)
    for k in model.config():
        if k not in full and k in defaults:
            full[k] = defaults[k]
    return _jsonish(full)


def _jsonish(obj):
    """``obj`` as it reads back from the JSON metadata (tuples become lists)."""
    import json
    return json.loads(json.dumps(obj, sort_keys=True))


def read_record(path) -> Optional[dict]:
    _, meta = weights.read(path)
    return meta.get("record")


__all__ = ["save", "save_pair", "save_best", "load", "load_state", "load_weights", "check_steps", "exists", "rng_state",
           "set_rng_state", "CheckpointError", "LAST_WEIGHTS", "LAST_STATE", "BEST_WEIGHTS", "LOG", "read_record"]
