"""`cpu` backend of :func:`mimo_fast.ops.amp_step` (kernel: csrc/amp_step/cpu/amp_step.cpp).

Complex tensors are passed as interleaved (re, im) buffers; conjugate/negative views are
resolved first (:mod:`mimo_fast.ops.native`). Forward is one fused sweep over H; backward
recomputes the forward sweep and takes one more (nothing beyond the inputs is saved).
"""
from __future__ import annotations

import torch

from mimo_fast import _ext
from mimo_fast.ops import native
from mimo_fast.ops import registry
from mimo_fast.ops.threads import num_threads

_INPUTS = "H:complex y:complex x:complex v z_prev:complex V_prev noise_var"
FORWARD = native.Signature("amp_step_forward", f"{_INPUTS} >r:complex >Sigma >z:complex >V", "B M N nthreads")
BACKWARD = native.Signature(
    "amp_step_backward",
    f"grad_r:complex grad_Sigma grad_z:complex grad_V {_INPUTS} "
    ">g_H:complex >g_y:complex >g_x:complex >g_v >g_z_prev:complex >g_V_prev >g_noise_var",
    "B M N nthreads")


def _empty(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype)


def forward(H, y, x, v, z_prev, V_prev, noise_var):
    B, M, N = H.shape
    outs = [_empty(x), _empty(v), _empty(y), _empty(V_prev)]              # r, Sigma, z, V
    FORWARD.call(_ext.C.amp_step_forward, H, y, x, v, z_prev, V_prev, noise_var, *outs, B, M, N, num_threads())
    return outs


def backward(grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var):
    B, M, N = H.shape
    ins = (H, y, x, v, z_prev, V_prev, noise_var)
    grads = [_empty(t) for t in ins]
    BACKWARD.call(_ext.C.amp_step_backward, grad_r, grad_Sigma, grad_z, grad_V, *ins, *grads,
                  B, M, N, num_threads())
    return grads


registry.get_backend("cpu").implement("amp_step", forward, backward)
