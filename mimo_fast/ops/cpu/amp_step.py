"""`cpu` backend of :func:`mimo_fast.ops.amp_step` (kernel: csrc/amp_step/amp_step.cpp).

Complex tensors are passed as interleaved (re, im) buffers; conjugate/negative views are
resolved first. Forward is one fused sweep over H; backward recomputes the forward sweep
and takes one more (nothing beyond the inputs is saved).
"""
from __future__ import annotations

import torch

from mimo_fast import _ext
from mimo_fast.ops.backends import CPU
from mimo_fast.ops.threads import num_threads

_CODES = {torch.float32: 0, torch.float64: 1}


def _c(t: torch.Tensor) -> torch.Tensor:
    return t.resolve_conj().resolve_neg().contiguous()


def forward(H, y, x, v, z_prev, V_prev, noise_var):
    ins = [_c(t) for t in (H, y, x, v, z_prev, V_prev, noise_var)]
    B, M, N = H.shape
    outs = [torch.empty_like(ins[2]), torch.empty_like(ins[3]), torch.empty_like(ins[1]),
            torch.empty_like(ins[5])]                                   # r, Sigma, z, V
    _ext.C.amp_step_forward([t.data_ptr() for t in ins + outs], B, M, N,
                            _CODES[ins[3].dtype], num_threads())
    return outs


def backward(grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var):
    ins = [_c(t) for t in (grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var)]
    B, M, N = H.shape
    grads = [torch.empty_like(t) for t in ins[4:]]
    _ext.C.amp_step_backward([t.data_ptr() for t in ins + grads], B, M, N,
                             _CODES[ins[7].dtype], num_threads())
    return grads


CPU.implement("amp_step", forward, backward)
