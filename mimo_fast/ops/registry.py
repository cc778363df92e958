"""Backend registry and dispatch for the ops.

Every backend declares what it can serve: the device types, the dtypes, size limits,
its own tolerances, and per op a forward and a backward. Dispatch (docs/conventions.md, "Backends and how one is chosen"):

* an explicit choice (``backend=`` or ``MIMO_FAST_BACKEND``) that cannot be served is
  an error saying why (:class:`BackendUnavailableError`);
* the automatic choice tries the backends serving the inputs' device by priority and
  falls back quietly, with a one-time :class:`BackendFallbackWarning` naming each faster
  backend that refused and its reason.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Callable, Optional

import torch

OP_NAMES = ("mpnn_message_sum", "ep_lmmse", "amp_step", "ep_cavity", "ep_update")
ENV_VAR = "MIMO_FAST_BACKEND"


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run this op on these inputs."""


class BackendFallbackWarning(UserWarning):
    """The automatic choice skipped a faster backend (shown once per op, device and reason)."""


@dataclasses.dataclass
class OpImpl:
    """One backend's implementation of one op.

    ``forward``/``backward`` take the op's tensors in schema order (see the op modules).
    ``refuse(*tensors)`` returns why these particular inputs cannot be served (a size
    limit, say) or None.
    """

    forward: Callable
    backward: Callable
    refuse: Optional[Callable[..., Optional[str]]] = None


@dataclasses.dataclass
class Backend:
    name: str
    #: higher runs first in the automatic choice
    priority: int
    #: device types served automatically (``"cpu"``, ``"cuda"``)
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    #: returns why the whole backend is off on this machine, or None
    unavailable: Callable[[], Optional[str]] = lambda: None
    #: device types served only when asked for by name (Triton's interpreter on the CPU)
    explicit_devices: tuple[str, ...] = ()
    #: (rtol, atol) per real dtype against the reference; complex uses its real dtype
    tolerances: dict = dataclasses.field(default_factory=dict)
    ops: dict = dataclasses.field(default_factory=dict)
    #: why an op has no implementation in this backend (shown instead of a bare "missing")
    missing_reason: str = "not implemented"

    def implement(self, op: str, forward: Callable, backward: Callable,
                  refuse: Optional[Callable[..., Optional[str]]] = None) -> None:
        if op not in OP_NAMES:
            raise ValueError(f"unknown op {op!r}; ops are {OP_NAMES}")
        self.ops[op] = OpImpl(forward, backward, refuse)

    def refusal(self, op: str, tensors: tuple, explicit: bool, variant: str = "") -> Optional[str]:
        """Why this backend cannot run ``op`` on ``tensors`` (None when it can). ``variant``
        names a form of the op that backends may validate separately (``"relu"`` for
        ``mpnn_message_sum(out_act="relu")``); it is ``""`` for the plain form."""
        reason = self.unavailable()
        if reason:
            return reason
        first = tensors[0]
        devices = self.devices + (self.explicit_devices if explicit else ())
        if first.device.type not in devices:
            extra = ""
            if not explicit and first.device.type in self.explicit_devices:
                extra = " automatically (ask for it by name)"
            return f"does not run on {first.device.type} tensors{extra}; serves {', '.join(devices) or 'nothing'}"
        real = first.dtype.to_real() if first.dtype.is_complex else first.dtype
        if real not in self.dtypes:
            return f"does not support {real} (supports {', '.join(str(d) for d in self.dtypes)})"
        impl = self.ops.get(op)
        if impl is None:
            return f"has no {op} kernel: {self.missing_reason}"
        if impl.refuse is not None:
            return impl.refuse(*tensors)
        return None

    def tolerance(self, dtype: torch.dtype) -> tuple[float, float]:
        real = dtype.to_real() if dtype.is_complex else dtype
        return self.tolerances.get(real, (1e-5, 1e-6))


@dataclasses.dataclass(frozen=True)
class OpLimits:
    """What an op module declares about the GPU backends of its op (the op owns these facts,
    with the measurements behind them; :func:`declare_limits`).

    ``gpu_validated`` maps a backend name to the forms of the op (``""`` the plain form, or a
    variant such as ``"relu"``) whose kernels passed the test suite on a real GPU: a GPU
    backend serves only those automatically. ``auto_refusal(backend_name, tensors)`` says why
    the automatic choice should skip a backend for these inputs (a size where it measured
    slower), or None; an explicit request still runs it."""

    gpu_validated: dict = dataclasses.field(default_factory=dict)
    auto_refusal: Optional[Callable[[str, tuple], Optional[str]]] = None

    def validated(self, backend: str, variant: str = "") -> bool:
        return variant in self.gpu_validated.get(backend, ())


_BACKENDS: dict[str, Backend] = {}
_LIMITS: dict[str, OpLimits] = {}
_WARNED: set = set()


def declare_limits(op: str, *, gpu_validated: Optional[dict] = None,
                   auto_refusal: Optional[Callable[[str, tuple], Optional[str]]] = None) -> OpLimits:
    """Record an op's GPU validation and automatic-choice rule (called by the op's module)."""
    if op not in OP_NAMES:
        raise ValueError(f"unknown op {op!r}; ops are {OP_NAMES}")
    validated = {b: frozenset(v) for b, v in (gpu_validated or {}).items()}
    _LIMITS[op] = OpLimits(validated, auto_refusal)
    return _LIMITS[op]


def op_limits(op: str) -> OpLimits:
    """The limits ``op``'s module declared (none: no GPU form validated, no size rule)."""
    return _LIMITS.get(op, OpLimits())


def validated_names(backend: str) -> frozenset:
    """``"op"`` / ``"op:variant"`` for every form validated on a GPU for ``backend``."""
    return frozenset(f"{op}:{v}" if v else op for op, lim in _LIMITS.items()
                     for v in lim.gpu_validated.get(backend, ()))


def register_backend(backend: Backend) -> Backend:
    _BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown backend {name!r}; backends are {', '.join(sorted(_BACKENDS))}"
        ) from None


def backends() -> dict[str, Backend]:
    """All registered backends, by name."""
    return dict(_BACKENDS)


def backend_arg(backend: Optional[str]) -> str:
    """The ``backend=`` argument as the ops pass it on: a name, or '' for "not given"
    (then :func:`resolve` consults ``MIMO_FAST_BACKEND`` when the op runs, so the
    variable applies inside compiled graphs too)."""
    if backend is None:
        return ""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str or None, got {type(backend).__name__}")
    return backend


def resolve(op: str, requested: str, tensors: tuple, variant: str = "") -> Backend:
    """Pick the backend that runs ``op`` on ``tensors`` (see the module docstring)."""
    from_env = not requested
    if from_env:
        requested = os.environ.get(ENV_VAR, "").strip()
    if requested:
        where = f"{ENV_VAR}={requested}" if from_env else f"backend={requested!r}"
        if requested not in _BACKENDS:
            raise ValueError(f"{op}: unknown backend {requested!r} (from {where}); "
                             f"backends are {', '.join(sorted(_BACKENDS))}")
        b = _BACKENDS[requested]
        reason = b.refusal(op, tensors, explicit=True, variant=variant)
        if reason:
            raise BackendUnavailableError(f"{op}: backend '{requested}' (from {where}) cannot run here: {reason}")
        return b
    device = tensors[0].device.type
    refused = []
    for b in sorted(_BACKENDS.values(), key=lambda b: -b.priority):
        if device not in b.devices:
            continue
        reason = b.refusal(op, tensors, explicit=False, variant=variant)
        if reason is None:
            if refused:
                key = (op, device, b.name, tuple(refused))
                if key not in _WARNED:
                    _WARNED.add(key)
                    why = "; ".join(f"'{n}' {r}" for n, r in refused)
                    warnings.warn(f"mimo_fast.ops.{op} on {device}: using backend '{b.name}' because {why}",
                                  BackendFallbackWarning, stacklevel=4)
            return b
        refused.append((b.name, reason))
    why = "; ".join(f"'{n}' {r}" for n, r in refused) or "no backend serves this device"
    raise BackendUnavailableError(f"{op}: no backend can run on {device} tensors: {why}")


def explain(op: str, tensors: tuple, variant: str = "") -> dict[str, Optional[str]]:
    """Each backend's refusal for these inputs (None = would run). For `mimo-fast info` and tests."""
    return {n: b.refusal(op, tensors, explicit=True, variant=variant) for n, b in sorted(_BACKENDS.items())}
