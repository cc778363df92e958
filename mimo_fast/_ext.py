"""Probe the compiled extensions once. Import never fails because one is missing: the
reason is recorded and shown by ``mimo-fast info`` and by the backend registry."""
from __future__ import annotations

import importlib
from types import ModuleType


def __getattr__(name: str):
    # DTYPE_CODES, by dtype name: kept for old callers; the one table is
    # mimo_fast.ops.native.DTYPE_CODES (imported lazily: this module does not import torch).
    if name == "DTYPE_CODES":
        from mimo_fast.ops.native import DTYPE_CODES
        return {str(dt).removeprefix("torch."): code for dt, code in DTYPE_CODES.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _probe(name: str) -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module(f"mimo_fast.{name}"), None
    except ImportError as exc:  # not built, or built for another Python/ABI
        return None, f"mimo_fast.{name} could not be imported ({exc})"


C, C_REASON = _probe("_C")
C_CUDA, C_CUDA_REASON = _probe("_C_cuda")
if C_CUDA is None and C_CUDA_REASON and "No module named" in C_CUDA_REASON:
    C_CUDA_REASON = "mimo_fast._C_cuda was not built (no CUDA compiler at build time, or MIMO_FAST_CUDA=OFF)"


def cuda_device_reason() -> str | None:
    """Why the CUDA extension cannot run here, or None when it can."""
    if C_CUDA is None:
        return C_CUDA_REASON
    count, _driver, _runtime, err = C_CUDA.device_status()
    if err:
        return f"the CUDA runtime reports {err}"
    if count == 0:
        return "no CUDA device is visible"
    return None
