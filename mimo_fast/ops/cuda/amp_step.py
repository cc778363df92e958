"""`cuda` backend of :func:`mimo_fast.ops.amp_step` (kernels: csrc/amp_step/amp_step.cu,
bodies and tiling in csrc/amp_step/amp_step_tiles.cuh).

Complex tensors go to the kernels as their interleaved (re, im) memory (conjugate bits
resolved). Forward reads H once: a block per row tile of one batch element computes the
rows' V, z, w, t and per-tile column partials, and a small kernel sums the partials in
tile order (deterministic: same inputs, same bits). Backward recomputes the forward and
reads H once more. The kernels' scratch (partials, recomputed rows) is one workspace
tensor allocated here, so it comes from torch's caching allocator on the current stream.

``max_blocks``, ``smem_optin`` and ``emulate`` are for tests: a smaller grid (batch
chunking), a shared-memory limit (a small one keeps the tile in global memory), or the
host emulator on CPU tensors (0/1: thread order).
"""
from __future__ import annotations

from typing import Optional

import torch

from mimo_fast import _ext
from mimo_fast.ops.backends import CUDA
from mimo_fast.ops.cuda import _device as D


def launch_config(B: int, M: int, N: int, dtype: torch.dtype, smem_optin: int, **opts) -> dict:
    """The kernels' launch configuration (see ``_C_cuda.amp_step_launch_config``)."""
    return _ext.C_CUDA.amp_step_launch_config(B, M, N, D.CODES[dtype], smem_optin, **opts)


def refuse(H, *_) -> Optional[str]:
    B, M, N = H.shape
    cfg = launch_config(B, M, N, D.real_dtype(H), D.smem_optin(H.device))
    return None if cfg["fits"] else cfg["reason"]


def _run(fn, tensors, H, key, max_blocks, smem_optin, emulate):
    B, M, N = H.shape
    real = D.real_dtype(H)
    optin = smem_optin or D.smem_optin(H.device, emulate)
    cfg = launch_config(B, M, N, real, optin, max_blocks=max_blocks)
    ws = torch.empty(cfg[key], dtype=real, device=H.device)
    with D.on_device(H.device, emulate):
        fn([t.data_ptr() for t in tensors], ws.data_ptr(), ws.numel(), B, M, N, D.CODES[real],
           D.stream_handle(H.device, emulate), optin, max_blocks=max_blocks, emulate=emulate)


def forward(H, y, x, v, z_prev, V_prev, noise_var, *, max_blocks: int = 0,
            smem_optin: Optional[int] = None, emulate: int = -1):
    ins = [D.contiguous(t) for t in (H, y, x, v, z_prev, V_prev, noise_var)]
    outs = [torch.empty_like(ins[2]), torch.empty_like(ins[3]), torch.empty_like(ins[1]),
            torch.empty_like(ins[5])]                                   # r, Sigma, z, V
    _run(_ext.C_CUDA.amp_step_forward, ins + outs, ins[0], "workspace_forward", max_blocks, smem_optin, emulate)
    return outs


def backward(grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var, *,
             max_blocks: int = 0, smem_optin: Optional[int] = None, emulate: int = -1):
    ins = [D.contiguous(t) for t in (grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var)]
    grads = [torch.empty_like(t) for t in ins[4:]]
    _run(_ext.C_CUDA.amp_step_backward, ins + grads, ins[4], "workspace_backward", max_blocks, smem_optin, emulate)
    return grads


CUDA.implement("amp_step", forward, backward, refuse=refuse)
