"""Registers the compiled backends (`cpu`, `triton`, `cuda`) with what they can serve.

Each records why it is off when it is: a missing extension, Triton not installed, no
GPU. An op a backend has no kernel for is refused with that reason, so the automatic
choice falls back to `reference` and an explicit request says why it cannot be served.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Optional

import torch

from mimo_fast import _ext
from mimo_fast.ops.registry import Backend, register_backend

_FLOATS = (torch.float32, torch.float64)
# Tolerances against the reference, per real dtype: (rtol, atol). Fused kernels sum in
# another order than the reference, so float32 gets a few ulps of the output scale.
_FUSED_TOL = {torch.float32: (2e-4, 2e-5), torch.float64: (1e-9, 1e-11)}

CPU = register_backend(Backend(
    name="cpu", priority=10, devices=("cpu",), dtypes=_FLOATS,
    unavailable=lambda: _ext.C_REASON, tolerances=_FUSED_TOL,
    missing_reason="this build has no C++ kernel for it yet",
))


@functools.lru_cache(maxsize=None)
def _triton_reason() -> Optional[str]:
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install 'mimo-fast[triton]')"
    return None


#: Ops whose Triton kernels have passed the test suite on a real GPU. Until an op is
#: listed, the automatic choice does not take its Triton kernel on CUDA tensors (it was
#: verified only under the interpreter, which cannot show GPU numerics, atomics or launch
#: limits); asking for backend="triton" by name still runs it. Add an op here in the same
#: commit as the GPU test log that validates it.
TRITON_GPU_VALIDATED: frozenset = frozenset()


class _TritonBackend(Backend):
    """Triton serves CUDA tensors; CPU tensors only through its interpreter
    (TRITON_INTERPRET=1), and then only when asked for by name: it is for testing."""

    def refusal(self, op, tensors, explicit):
        if tensors[0].device.type == "cpu" and explicit and self.unavailable() is None:
            if os.environ.get("TRITON_INTERPRET", "") != "1":
                return "runs on CPU tensors only under the Triton interpreter (set TRITON_INTERPRET=1 before importing triton)"
        if not explicit and op not in TRITON_GPU_VALIDATED and self.unavailable() is None:
            return (f"its {op} kernel has not yet been validated on a GPU, so it is used only "
                    "when asked for by name (backend='triton')")
        return super().refusal(op, tensors, explicit)


TRITON = register_backend(_TritonBackend(
    name="triton", priority=20, devices=("cuda",), explicit_devices=("cpu",), dtypes=_FLOATS,
    unavailable=_triton_reason, tolerances=_FUSED_TOL,
    missing_reason="this build has no Triton kernel for it yet",
))


@functools.lru_cache(maxsize=None)
def _cuda_reason() -> Optional[str]:
    return _ext.cuda_device_reason()


CUDA = register_backend(Backend(
    name="cuda", priority=30, devices=("cuda",), dtypes=_FLOATS,
    unavailable=_cuda_reason, tolerances=_FUSED_TOL,
    missing_reason="this build has no CUDA kernel for it yet",
))

if _ext.C is not None:
    import mimo_fast.ops.cpu  # noqa: E402,F401  (registers the C++ kernels on CPU)
if _ext.C_CUDA is not None:
    import mimo_fast.ops.cuda  # noqa: E402,F401  (registers the CUDA kernels)
if _triton_reason() is None:  # Triton kernels (guarded: a missing Triton only turns the backend off)
    from mimo_fast.ops import triton as _triton_kernels  # noqa: E402,F401
