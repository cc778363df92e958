"""Probe the compiled extensions once. Import never fails because one is missing: the
reason is recorded and shown by ``mimo-fast info`` and by the backend registry."""
from __future__ import annotations

import importlib
from types import ModuleType

#: dtype codes understood by the C++ helpers (csrc/common/strided.h)
DTYPE_CODES = {"float32": 0, "float64": 1}


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
