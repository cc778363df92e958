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


#: Ops whose Triton kernels have passed the test suite on a real GPU: an NVIDIA H100
#: (torch 2.11 + CUDA 13, Triton 3.6), 2026-11-22, every op sample on CUDA tensors, values,
#: gradients, gradcheck (float64), opcheck and torch.compile -- bench/results/gpu_h100_tests.md.
#: An op not listed is used only when asked for by name (the interpreter cannot show GPU
#: numerics, atomics or launch limits).
#: A form of an op validated separately is listed as "op:variant": mpnn_message_sum's
#: out_act="relu" form ("mpnn_message_sum:relu") has not run on a GPU yet.
TRITON_GPU_VALIDATED: frozenset = frozenset({"ep_lmmse", "amp_step", "mpnn_message_sum"})


def _validated_name(op: str, variant: str) -> str:
    return f"{op}:{variant}" if variant else op

#: Where the automatic choice prefers the reference to a validated Triton kernel, measured
#: on that H100 (bench/results/gpu_h100.md; forward + backward, the training case):
#: mpnn_message_sum with H1 x H2 = 128 x 64 (S1) took 10.3 ms in Triton against 5.35 ms in
#: the reference (the backward's tiles spill registers at that width), while 64 x 32 (S3,
#: 6.8 vs 17.3 ms) and 16 x 8 (S2, 2.4 vs 4.7 ms) are faster in Triton. So Triton serves
#: mpnn_message_sum automatically up to H1 * H2 = 2048 (the GEPNet and AMP-GNN sizes).
TRITON_AUTO_MPNN_MAX_H1H2 = 2048


def _triton_auto_refusal(op: str, tensors: tuple) -> Optional[str]:
    if op == "mpnn_message_sum" and len(tensors) >= 5:
        h1, h2 = tensors[2].shape[0], tensors[4].shape[0]
        if h1 * h2 > TRITON_AUTO_MPNN_MAX_H1H2:
            return (f"its mpnn_message_sum kernel is slower than the reference in forward+backward at "
                    f"H1 x H2 = {h1} x {h2} > {TRITON_AUTO_MPNN_MAX_H1H2} (measured on an H100), so it runs "
                    "there only when asked for by name (backend='triton')")
    return None


class _TritonBackend(Backend):
    """Triton serves CUDA tensors; CPU tensors only through its interpreter
    (TRITON_INTERPRET=1), and then only when asked for by name: it is for testing."""

    def refusal(self, op, tensors, explicit, variant=""):
        if tensors[0].device.type == "cpu" and explicit and self.unavailable() is None:
            if os.environ.get("TRITON_INTERPRET", "") != "1":
                return "runs on CPU tensors only under the Triton interpreter (set TRITON_INTERPRET=1 before importing triton)"
        if not explicit and self.unavailable() is None:
            if _validated_name(op, variant) not in TRITON_GPU_VALIDATED:
                return (f"its {_validated_name(op, variant)} kernel has not yet been validated on a GPU, so it "
                        "is used only when asked for by name (backend='triton')")
            why = _triton_auto_refusal(op, tensors)
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


#: Ops whose CUDA kernels have passed the test suite on a real GPU. The kernels were written
#: and checked here without one (a host emulator runs their bodies, tests/test_*_cuda.py);
#: until an op is listed, the automatic choice leaves it to `triton`/`reference` and
#: backend="cuda" runs it by name. Add an op in the same commit as its GPU test log.
CUDA_GPU_VALIDATED: frozenset = frozenset()


class _CudaBackend(Backend):
    def refusal(self, op, tensors, explicit, variant=""):
        if not explicit and _validated_name(op, variant) not in CUDA_GPU_VALIDATED and self.unavailable() is None:
            return (f"its {_validated_name(op, variant)} kernel has not yet been validated on a GPU, so it is "
                    "used only when asked for by name (backend='cuda')")
        return super().refusal(op, tensors, explicit, variant)


CUDA = register_backend(_CudaBackend(
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
