"""`cuda` backend of :func:`mimo_fast.ops.ep_lmmse` (kernels: csrc/ep_lmmse/ep_lmmse.cu,
math in csrc/ep_lmmse/ep_lmmse_group.cuh).

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
from mimo_fast.ops.backends import CUDA
from mimo_fast.ops.cuda import _device as D


def launch_config(B: int, K: int, dtype: torch.dtype, smem_optin: int, backward: bool = False, **opts) -> dict:
    """The kernels' launch configuration (see ``_C_cuda.ep_lmmse_launch_config``)."""
    return _ext.C_CUDA.ep_lmmse_launch_config(B, K, D.CODES[dtype], smem_optin, backward, **opts)


def refuse(gram, rhs, *_) -> Optional[str]:
    B, K = rhs.shape
    cfg = launch_config(B, K, gram.dtype, D.smem_optin(gram.device), backward=True)
    return None if cfg["fits"] else cfg["reason"]


def _run(fn, tensors, rhs, path, threads, max_blocks, smem_optin, emulate):
    B, K = rhs.shape
    optin = smem_optin or D.smem_optin(rhs.device, emulate)
    with D.on_device(rhs.device, emulate):
        fn([t.data_ptr() for t in tensors], B, K, D.CODES[rhs.dtype], D.stream_handle(rhs.device, emulate),
           optin, path=path, threads=threads, max_blocks=max_blocks, emulate=emulate)


def forward(gram, rhs, lam, gam, *, path: int = 0, threads: int = 0, max_blocks: int = 0,
            smem_optin: Optional[int] = None, emulate: int = -1):
    gram, rhs, lam, gam = (D.contiguous(t) for t in (gram, rhs, lam, gam))
    mean, var = torch.empty_like(rhs), torch.empty_like(rhs)
    info = torch.zeros(rhs.shape[0], dtype=torch.int32, device=rhs.device)
    _run(_ext.C_CUDA.ep_lmmse_forward, [gram, rhs, lam, gam, mean, var, info], rhs,
         path, threads, max_blocks, smem_optin, emulate)
    return mean, var, info


def backward(grad_mean, grad_var, gram, rhs, lam, gam, *, path: int = 0, threads: int = 0,
             max_blocks: int = 0, smem_optin: Optional[int] = None, emulate: int = -1):
    ins = [D.contiguous(t) for t in (grad_mean, grad_var, gram, rhs, lam, gam)]
    g_gram = torch.empty_like(ins[2])
    g_rhs, g_lam, g_gam = (torch.empty_like(ins[3]) for _ in range(3))
    _run(_ext.C_CUDA.ep_lmmse_backward, ins + [g_gram, g_rhs, g_lam, g_gam], ins[3],
         path, threads, max_blocks, smem_optin, emulate)
    return [g_gram, g_rhs, g_lam, g_gam]


CUDA.implement("ep_lmmse", forward, backward, refuse=refuse)
