"""`cpu` backend of :func:`mimo_fast.ops.ep_lmmse` (kernel: csrc/ep_lmmse/ep_lmmse.cpp).

Forward returns ``(mean, var, info)`` like the reference: ``info[b]`` is the order of the
first non-positive pivot of ``A = sym(gram) + diag(lam)`` (0 when it factorised) and the
mean/var rows of failed matrices are NaN. Backward recomputes the Cholesky factor
(nothing beyond the inputs is saved) and writes NaN gradients for failed matrices.
"""
from __future__ import annotations

import torch

from mimo_fast import _ext
from mimo_fast.ops.backends import CPU
from mimo_fast.ops.threads import num_threads

_CODES = {torch.float32: 0, torch.float64: 1}


def _c(t: torch.Tensor) -> torch.Tensor:
    return t.resolve_conj().resolve_neg().contiguous()


def forward(gram, rhs, lam, gam):
    gram, rhs, lam, gam = (_c(t) for t in (gram, rhs, lam, gam))
    B, K = rhs.shape
    mean, var = torch.empty_like(rhs), torch.empty_like(rhs)
    info = torch.empty(B, dtype=torch.int32)
    _ext.C.ep_lmmse_forward(gram.data_ptr(), rhs.data_ptr(), lam.data_ptr(), gam.data_ptr(),
                            mean.data_ptr(), var.data_ptr(), info.data_ptr(), B, K,
                            _CODES[gram.dtype], num_threads())
    return mean, var, info


def backward(grad_mean, grad_var, gram, rhs, lam, gam):
    grad_mean, grad_var, gram, rhs, lam, gam = (_c(t) for t in (grad_mean, grad_var, gram, rhs, lam, gam))
    B, K = rhs.shape
    g_gram = torch.empty_like(gram)
    g_rhs, g_lam, g_gam = (torch.empty_like(rhs) for _ in range(3))
    _ext.C.ep_lmmse_backward(grad_mean.data_ptr(), grad_var.data_ptr(), gram.data_ptr(),
                             rhs.data_ptr(), lam.data_ptr(), gam.data_ptr(), g_gram.data_ptr(),
                             g_rhs.data_ptr(), g_lam.data_ptr(), g_gam.data_ptr(), B, K,
                             _CODES[gram.dtype], num_threads())
    return [g_gram, g_rhs, g_lam, g_gam]


CPU.implement("ep_lmmse", forward, backward)
