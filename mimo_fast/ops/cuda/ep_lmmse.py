"""`cuda` backend of :func:`mimo_fast.ops.ep_lmmse` (kernels: csrc/ep_lmmse/cuda/ep_lmmse.cu,
math in csrc/ep_lmmse/cuda/ep_lmmse_group.cuh).

Forward returns ``(mean, var, info)`` like the reference: ``info[b]`` is the order of the
first non-positive pivot of ``A = sym(gram) + diag(lam)`` (0 when it factorised) and the
mean/var rows of failed matrices are NaN. Backward recomputes the Cholesky factor and
writes NaN gradients for failed matrices. A warp factorises each matrix for K <= 32, a
block above; the packed factor lives in shared memory, so K whose backward does not fit
the device's opt-in shared memory is refused (:func:`refuse`) and the op falls back.

``path``, ``threads``, ``max_blocks``, ``smem_optin`` and ``emulate`` are for tests: force
the warp (1) or block (2) path, the block path's thread count, a smaller grid (batch
chunking), a shared-memory limit, or the host emulator on CPU tensors (0/1: thread order).
"""
from __future__ import annotations

from typing import Optional

import torch

from mimo_fast import _ext
from mimo_fast.ops import native
from mimo_fast.ops import registry
from mimo_fast.ops.cuda import _device as D

_SCALARS = "B K stream smem_optin path threads max_blocks emulate"
FORWARD = native.Signature("ep_lmmse_forward", "gram rhs lam gam >mean >var >info:int32", _SCALARS, device="cuda")
BACKWARD = native.Signature("ep_lmmse_backward", "grad_mean grad_var gram rhs lam gam >g_gram >g_rhs >g_lam >g_gam",
                            _SCALARS, device="cuda")


def launch_config(B: int, K: int, dtype: torch.dtype, smem_optin: int, backward: bool = False, **opts) -> dict:
    """The kernels' launch configuration (see ``_C_cuda.ep_lmmse_launch_config``)."""
    return _ext.C_CUDA.ep_lmmse_launch_config(B, K, native.dtype_code(dtype), smem_optin, backward, **opts)


def refuse(gram, rhs, *_) -> Optional[str]:
    B, K = rhs.shape
    cfg = launch_config(B, K, gram.dtype, D.smem_optin(gram.device), backward=True)
    return None if cfg["fits"] else cfg["reason"]


def _run(sig, fn, tensors, rhs, path, threads, max_blocks, smem_optin, emulate):
    B, K = rhs.shape
    optin = smem_optin or D.smem_optin(rhs.device, emulate)
    with D.on_device(rhs.device, emulate):
        sig.call(fn, *tensors, B, K, D.stream_handle(rhs.device, emulate), optin, path, threads, max_blocks, emulate,
                 device=D.block_device(emulate))


def forward(gram, rhs, lam, gam, *, path: int = 0, threads: int = 0, max_blocks: int = 0,
            smem_optin: Optional[int] = None, emulate: int = -1):
    B, K = rhs.shape
    mean, var = rhs.new_empty(B, K), rhs.new_empty(B, K)
    info = torch.zeros(B, dtype=torch.int32, device=rhs.device)
    _run(FORWARD, _ext.C_CUDA.ep_lmmse_forward, [gram, rhs, lam, gam, mean, var, info], rhs,
         path, threads, max_blocks, smem_optin, emulate)
    return mean, var, info


def backward(grad_mean, grad_var, gram, rhs, lam, gam, *, path: int = 0, threads: int = 0,
             max_blocks: int = 0, smem_optin: Optional[int] = None, emulate: int = -1):
    B, K = rhs.shape
    g_gram = gram.new_empty(B, K, K)
    g_rhs, g_lam, g_gam = (rhs.new_empty(B, K) for _ in range(3))
    _run(BACKWARD, _ext.C_CUDA.ep_lmmse_backward, [grad_mean, grad_var, gram, rhs, lam, gam, g_gram, g_rhs, g_lam,
                                                   g_gam], rhs, path, threads, max_blocks, smem_optin, emulate)
    return [g_gram, g_rhs, g_lam, g_gam]


registry.get_backend("cuda").implement("ep_lmmse", forward, backward, refuse=refuse)
