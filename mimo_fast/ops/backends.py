"""Declares the compiled backends (`cpu`, `triton`, `cuda`) and loads their kernels.

Each records why it is off when it is: a missing extension, Triton not installed, no
GPU. An op a backend has no kernel for is refused with that reason, so the automatic
choice falls back to `reference` and an explicit request says why it cannot be served.

Import order (one direction, no cycle):

1. :mod:`mimo_fast.ops.registry` -- the :class:`~mimo_fast.ops.registry.Backend` class and the
   tables of backends and of op limits; imports nothing else of the package.
2. this module -- declares the backends with their generic facts (devices, dtypes,
   tolerances, availability), then imports each available implementation package.
3. ``ops/cpu``, ``ops/cuda``, ``ops/triton`` -- each kernel module looks its backend up by
   name (``registry.get_backend("cpu").implement(...)``) and never imports this module.
4. the op modules (``ops/<op>.py``, imported by the package or by a kernel module for the
   shared math) -- import the registry only and declare their own GPU validation and size
   rules (:func:`~mimo_fast.ops.registry.declare_limits`), which the GPU backends read
   when a call is dispatched.

The names that used to live here (``TRITON_GPU_VALIDATED``, ``TRITON_AUTO_MPNN_MAX_H1H2``,
``CUDA_GPU_VALIDATED``, ...) are still importable; they are read from the op modules.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Optional

import torch

from mimo_fast import _ext
from mimo_fast.ops import registry
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


def _validated_name(op: str, variant: str) -> str:
    return f"{op}:{variant}" if variant else op


def _gpu_refusal(backend: str, op: str, variant: str) -> Optional[str]:
    """The automatic choice takes a GPU kernel only in a form its op module lists as passed on
    a real GPU (the validation log is cited there); an unlisted one runs only by name."""
    if registry.op_limits(op).validated(backend, variant):
        return None
    return (f"its {_validated_name(op, variant)} kernel has not yet been validated on a GPU, so it "
            f"is used only when asked for by name (backend='{backend}')")


def _triton_auto_refusal(op: str, tensors: tuple) -> Optional[str]:
    """The op module's rule for where the automatic choice skips Triton (None: no rule)."""
    rule = registry.op_limits(op).auto_refusal
    return rule("triton", tensors) if rule is not None else None


class _TritonBackend(Backend):
    """Triton serves CUDA tensors; CPU tensors only through its interpreter
    (TRITON_INTERPRET=1), and then only when asked for by name: it is for testing."""

    def refusal(self, op, tensors, explicit, variant=""):
        if tensors[0].device.type == "cpu" and explicit and self.unavailable() is None:
            if os.environ.get("TRITON_INTERPRET", "") != "1":
                return "runs on CPU tensors only under the Triton interpreter (set TRITON_INTERPRET=1 before importing triton)"
        if not explicit and self.unavailable() is None:
            why = _gpu_refusal(self.name, op, variant) or _triton_auto_refusal(op, tensors)
            if why:
                return why
        return super().refusal(op, tensors, explicit, variant)


TRITON = register_backend(_TritonBackend(
    name="triton", priority=20, devices=("cuda",), explicit_devices=("cpu",), dtypes=_FLOATS,
    unavailable=_triton_reason, tolerances=_FUSED_TOL,
    missing_reason="this build has no Triton kernel for it yet",
))


@functools.lru_cache(maxsize=None)
def _cuda_reason() -> Optional[str]:
    return _ext.cuda_device_reason()


class _CudaBackend(Backend):
    """The CUDA kernels were written and checked without a GPU (a host emulator runs their
    bodies, tests/test_*_cuda*.py); an op form is chosen automatically once its module lists
    it as validated on a GPU (in the same commit as its GPU test log)."""

    def refusal(self, op, tensors, explicit, variant=""):
        if not explicit and self.unavailable() is None:
            why = _gpu_refusal(self.name, op, variant)
            if why:
                return why
        return super().refusal(op, tensors, explicit, variant)


CUDA = register_backend(_CudaBackend(
    name="cuda", priority=30, devices=("cuda",), dtypes=_FLOATS,
    unavailable=_cuda_reason, tolerances=_FUSED_TOL,
    missing_reason="this build has no CUDA kernel for it yet",
))


def __getattr__(name: str):
    # The old names of the op-specific limits, read from the op modules that own them now.
    if name == "TRITON_GPU_VALIDATED":
        return registry.validated_names("triton")
    if name == "CUDA_GPU_VALIDATED":
        return registry.validated_names("cuda")
    if name == "TRITON_AUTO_MPNN_MAX_H1H2":
        from mimo_fast.ops.mpnn_message_sum import TRITON_AUTO_MAX_H1H2
        return TRITON_AUTO_MAX_H1H2
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if _ext.C is not None:
    import mimo_fast.ops.cpu  # noqa: E402,F401  (registers the C++ kernels on CPU)
if _ext.C_CUDA is not None:
    import mimo_fast.ops.cuda  # noqa: E402,F401  (registers the CUDA kernels)
if _triton_reason() is None:  # Triton kernels (guarded: a missing Triton only turns the backend off)
    from mimo_fast.ops import triton as _triton_kernels  # noqa: E402,F401
