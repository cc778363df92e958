"""`cuda` backend of :func:`mimo_fast.ops.amp_step` (kernels: csrc/amp_step/cuda/amp_step.cu,
bodies and tiling in csrc/amp_step/cuda/amp_step_tiles.cuh).

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
from mimo_fast.ops import native
from mimo_fast.ops import registry
from mimo_fast.ops.cuda import _device as D

_INPUTS = "H:complex y:complex x:complex v z_prev:complex V_prev noise_var"
_SCALARS = "B M N stream smem_optin max_blocks emulate"
FORWARD = native.Signature("amp_step_forward", f"{_INPUTS} >r:complex >Sigma >z:complex >V >workspace", _SCALARS,
                           device="cuda")
BACKWARD = native.Signature(
    "amp_step_backward",
    f"grad_r:complex grad_Sigma grad_z:complex grad_V {_INPUTS} "
    ">g_H:complex >g_y:complex >g_x:complex >g_v >g_z_prev:complex >g_V_prev >g_noise_var >workspace",
    _SCALARS, device="cuda")


def launch_config(B: int, M: int, N: int, dtype: torch.dtype, smem_optin: int, **opts) -> dict:
    """The kernels' launch configuration (see ``_C_cuda.amp_step_launch_config``)."""
    return _ext.C_CUDA.amp_step_launch_config(B, M, N, native.dtype_code(dtype), smem_optin, **opts)


def refuse(H, *_) -> Optional[str]:
    B, M, N = H.shape
    cfg = launch_config(B, M, N, D.real_dtype(H), D.smem_optin(H.device))
    return None if cfg["fits"] else cfg["reason"]


def _run(sig, fn, tensors, H, key, max_blocks, smem_optin, emulate):
    B, M, N = H.shape
    real = D.real_dtype(H)
    optin = smem_optin or D.smem_optin(H.device, emulate)
    cfg = launch_config(B, M, N, real, optin, max_blocks=max_blocks)
    ws = torch.empty(cfg[key], dtype=real, device=H.device)
    with D.on_device(H.device, emulate):
        sig.call(fn, *tensors, ws, B, M, N, D.stream_handle(H.device, emulate), optin, max_blocks, emulate,
                 device=D.block_device(emulate))


def _empty(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


def forward(H, y, x, v, z_prev, V_prev, noise_var, *, max_blocks: int = 0,
            smem_optin: Optional[int] = None, emulate: int = -1):
    ins = [H, y, x, v, z_prev, V_prev, noise_var]
    outs = [_empty(x), _empty(v), _empty(y), _empty(V_prev)]                # r, Sigma, z, V
    _run(FORWARD, _ext.C_CUDA.amp_step_forward, ins + outs, H, "workspace_forward", max_blocks, smem_optin, emulate)
    return outs


def backward(grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var, *,
             max_blocks: int = 0, smem_optin: Optional[int] = None, emulate: int = -1):
    ins = [H, y, x, v, z_prev, V_prev, noise_var]
    grads = [_empty(t) for t in ins]
    _run(BACKWARD, _ext.C_CUDA.amp_step_backward, [grad_r, grad_Sigma, grad_z, grad_V] + ins + grads, H,
         "workspace_backward", max_blocks, smem_optin, emulate)
    return grads


registry.get_backend("cuda").implement("amp_step", forward, backward, refuse=refuse)
