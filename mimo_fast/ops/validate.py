"""Input validation shared by every backend.

Two layers: ``check_*`` functions on metadata (type, dtype, device, shape) run in both
the real and the fake implementation, so ``torch.compile`` reports the same errors at
trace time; value checks (non-finite entries, non-positive variances) run only on real
tensors, before any kernel touches memory. Every error names the argument.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, Optional, Sequence

import torch
import torch.autograd.forward_ad as _forward_ad

from mimo_fast import _ext
from mimo_fast.ops import native

REAL_DTYPES = (torch.float32, torch.float64)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
#: set MIMO_FAST_SKIP_VALUE_CHECKS=1 to skip the value scans (each costs one pass over
#: the input and, on a GPU, a device synchronisation) in a trusted hot loop.
SKIP_ENV = "MIMO_FAST_SKIP_VALUE_CHECKS"
#: the compiled helpers' blocks: csrc/common/cpu/check_finite.cpp, csrc/common/cuda/screen_values.cu
FIRST_NONFINITE = native.Signature("first_nonfinite", "~tensor", "")
SCREEN_VALUES = native.Signature("screen_values", ">flags:int32 values*", "kinds stream", device="cuda")


def tensor(name: str, t, op: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def dtype_in(name: str, t: torch.Tensor, allowed: Sequence[torch.dtype], op: str) -> None:
    if t.dtype not in allowed:
        raise TypeError(f"{op}: {name} must have dtype {' or '.join(str(d) for d in allowed)}, got {t.dtype}")


def same_dtype(name: str, t: torch.Tensor, want: torch.dtype, ref_name: str, op: str) -> None:
    if t.dtype != want:
        raise TypeError(f"{op}: {name} has dtype {t.dtype} but {ref_name} has {want}; they must match")


def same_device(name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str, op: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; all inputs must share one device")


def shape(name: str, t: torch.Tensor, want: Sequence, op: str, names: Optional[Sequence[str]] = None) -> None:
    """Check ``t.shape == want``; ``names`` spells the expected shape, e.g. ('B', 'N', 'F')."""
    spelled = "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")" if names else str(tuple(want))
    if t.dim() != len(want):
        raise ValueError(f"{op}: {name} must have shape {spelled} = {tuple(want)}, got {t.dim()}-D shape {tuple(t.shape)}")
    for got, exp in zip(t.shape, want):
        if got != exp:
            raise ValueError(f"{op}: {name} must have shape {spelled} = {tuple(want)}, got {tuple(t.shape)}")


def ndim(name: str, t: torch.Tensor, n: int, op: str, names: Sequence[str]) -> None:
    if t.dim() != n:
        raise ValueError(f"{op}: {name} must be {n}-D with shape ({', '.join(names)}), got shape {tuple(t.shape)}")


def positive_size(name: str, value: int, what: str, op: str) -> None:
    if value < 1:
        raise ValueError(f"{op}: {name} must have at least one {what}, got {value}")


def no_forward_ad(op: str, *tensors) -> None:
    """Refuse forward-mode AD (``torch.autograd.forward_ad`` dual tensors): the ops register
    no forward derivative, and a custom op then returns its outputs without tangents and
    without an error. ``None`` entries are skipped; outside a ``dual_level`` this is one
    integer compare."""
    if getattr(_forward_ad, "_current_level", -1) < 0:  # private; a torch without it: no check
        return
    for t in tensors:
        if isinstance(t, torch.Tensor) and _forward_ad.unpack_dual(t).tangent is not None:
            raise NotImplementedError(
                f"{op}: forward-mode AD (torch.autograd.forward_ad) is not supported: the op has no "
                "forward derivative. Use reverse mode (backward() or torch.autograd.grad).")


_TRUSTED = threading.local()


def value_checks_enabled() -> bool:
    if getattr(_TRUSTED, "depth", 0) > 0:
        return False
    return os.environ.get(SKIP_ENV, "") not in ("1", "true", "yes")


@contextlib.contextmanager
def trusted_inputs() -> Iterator[None]:
    """Skip the ops' value scans (NaN/inf, non-positive variances) inside the block, in
    this thread. For callers that validated their own inputs once and then call an op
    many times on values derived from them (a detector's iterations); shape, dtype and
    device checks, and ep_lmmse's positive-definiteness error, stay on."""
    _TRUSTED.depth = getattr(_TRUSTED, "depth", 0) + 1
    try:
        yield
    finally:
        _TRUSTED.depth -= 1


def _index(flat: int, shape: torch.Size) -> tuple:
    idx = []
    for s in reversed(shape):
        idx.append(flat % s)
        flat //= s
    return tuple(reversed(idx))


def distinct(t: torch.Tensor) -> torch.Tensor:
    """``t`` with every broadcast dimension (stride 0, size > 1) narrowed to size 1: a view
    of the distinct stored elements, so a value scan costs the memory the tensor holds,
    not its logical size (``x.expand(200000, 200000)`` holds one element, not 4e10). The
    dimensions are kept, so an index into the view is an index into ``t`` (the first
    occurrence of a repeated value)."""
    for d, (size, stride) in enumerate(zip(t.shape, t.stride())):
        if stride == 0 and size > 1:
            t = t.narrow(d, 0, 1)
    return t


def _first_nonfinite(t: torch.Tensor) -> Optional[tuple]:
    """Index of the first non-finite entry of ``t`` (real or complex), or None. Scans the
    distinct stored elements only (:func:`distinct`)."""
    if t.numel() == 0:
        return None
    t = distinct(t)
    real = torch.view_as_real(t) if t.is_complex() else t
    if (real.device.type == "cpu" and _ext.C is not None and real.dtype in REAL_DTYPES
            and real.dim() <= native.MAX_DIMS):
        flat = FIRST_NONFINITE.call(_ext.C.first_nonfinite, real)
        if flat < 0:
            return None
        idx = _index(flat, real.shape)
    else:
        bad = ~torch.isfinite(real)
        if not bool(bad.any()):
            return None
        idx = tuple(int(i) for i in bad.nonzero()[0])
    return idx[:-1] if t.is_complex() else idx


def finite(name: str, t: torch.Tensor, op: str) -> None:
    idx = _first_nonfinite(t)
    if idx is not None:
        raise ValueError(f"{op}: {name} has a non-finite value ({t[idx].item()}) at index {idx}")


def values(op: str, finite_args: Sequence, positive_args: Sequence = ()) -> None:
    """One op call's value checks: every ``(name, t)`` in ``finite_args`` finite, then
    every ``(name, t, strict)`` in ``positive_args`` > 0 (strict) or >= 0.

    CPU tensors are scanned by the C++ helper. On a GPU each per-tensor scan would end in
    its own device-to-host sync (an op with seven inputs paid about ten per call), so the
    whole call is screened with one fused pass -- ``_foreach_norm`` (a NaN or inf makes
    the 2-norm non-finite) and one ``amin`` per variance -- and a single sync; only when
    the screen flags something (a real error, or a 2-norm that overflowed on huge finite
    values) are the tensors scanned one by one, which raises with the name and index."""
    dev = finite_args[0][1].device if finite_args else None
    if dev is not None and dev.type != "cpu" and _screen_passes(finite_args, positive_args):
        return
    for name, t in finite_args:
        finite(name, t, op)
    for name, t, strict in positive_args:
        positive(name, t, op, strict)


def _screen_passes(finite_args, positive_args) -> bool:
    fast = _screen_kernel(finite_args, positive_args)
    return _screen_torch(finite_args, positive_args) if fast is None else fast


def _screen_torch(finite_args, positive_args) -> bool:
    reals = [distinct(torch.view_as_real(t) if t.is_complex() else t) for _, t in finite_args if t.numel()]
    flags = []
    try:
        norms = torch._foreach_norm(reals, 2) if reals else []
    except (AttributeError, RuntimeError):   # private API: fall back to one sum per tensor
        norms = [t.sum() for t in reals]
    flags += [torch.isfinite(n.float()) for n in norms]
    for _, t, strict in positive_args:
        if t.numel():
            m = distinct(t).amin()
            flags.append(m > 0 if strict else m >= 0)
    return not flags or bool(torch.stack(flags).all())


def _screen_kernel(finite_args, positive_args) -> Optional[bool]:
    """The screen as one CUDA launch (csrc/common/cuda/screen_values.cu) when the CUDA
    extension is there and the tensors are contiguous CUDA tensors of one real dtype;
    None when it cannot be used (then the torch screen runs)."""
    ext = _ext.C_CUDA
    if ext is None or not hasattr(ext, "screen_values"):
        return None
    kinds = {id(t): (1 if strict else 2) for _, t, strict in positive_args}
    reals, kind_list = [], []
    for _, t in finite_args:
        if t.numel() == 0:
            continue
        r = torch.view_as_real(t) if t.is_complex() else t
        if r.device.type != "cuda" or not r.is_contiguous():
            return None
        reals.append(r)
        kind_list.append(kinds.get(id(t), 0))
    if not reals:
        return True
    if reals[0].dtype not in REAL_DTYPES or any(r.dtype != reals[0].dtype or r.device != reals[0].device
                                                 for r in reals):
        return None
    if len(reals) > 16:
        return None      # the kernel screens up to 16 tensors in one launch
    screened = {id(a) for _, a in finite_args}
    if any(id(t) not in screened for _, t, _ in positive_args):
        return None      # a variance not also screened for finiteness: keep the general path
    flags = torch.zeros(len(reals), dtype=torch.int32, device=reals[0].device)
    stream = torch.cuda.current_stream(reals[0].device).cuda_stream
    kinds_bits = sum(k << (2 * i) for i, k in enumerate(kind_list))        # 2 bits per tensor
    with torch.cuda.device(reals[0].device):
        SCREEN_VALUES.call(ext.screen_values, flags, reals, kinds_bits, stream)
    return not bool(flags.cpu().any())      # the one sync: a 64-byte copy, no extra kernel


def positive(name: str, t: torch.Tensor, op: str, strict: bool = True) -> None:
    """All entries > 0 (``strict``) or >= 0. Call after :func:`finite`. Scans the
    distinct stored elements only (:func:`distinct`)."""
    t = distinct(t)
    bad = t <= 0 if strict else t < 0
    if t.numel() and bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        rel = "> 0" if strict else ">= 0"
        raise ValueError(f"{op}: {name} must be {rel} everywhere, got {t[idx].item()} at index {idx}")
