"""`cpu` backend of :func:`mimo_fast.ops.ep_lmmse` (kernel: csrc/ep_lmmse/cpu/ep_lmmse.cpp).

Forward returns ``(mean, var, info)`` like the reference: ``info[b]`` is the order of the
first non-positive pivot of ``A = sym(gram) + diag(lam)`` (0 when it factorised) and the
mean/var rows of failed matrices are NaN. Backward recomputes the Cholesky factor
(nothing beyond the inputs is saved) and writes NaN gradients for failed matrices.
"""
from __future__ import annotations

import torch

from mimo_fast import _ext
from mimo_fast.ops import native
from mimo_fast.ops import registry
from mimo_fast.ops.threads import num_threads

FORWARD = native.Signature("ep_lmmse_forward", "gram rhs lam gam >mean >var >info:int32 >screen:uint8?",
                           "B K nthreads")
BACKWARD = native.Signature("ep_lmmse_backward", "grad_mean grad_var gram rhs lam gam >g_gram >g_rhs >g_lam >g_gam",
                            "B K nthreads")


def forward(gram, rhs, lam, gam, screen=False):
    """``screen=True`` also returns ``flagged`` and ``failed``: ``flagged`` is True when some
    matrix's inputs may hold a NaN/inf or a ``lam <= 0`` (the kernel sums what it reads; a
    finite sum that overflowed also flags), so the op's value check is a by-product of the
    one read of ``gram``; ``failed`` counts the matrices with ``info != 0``. Both come back
    from the kernel as plain numbers: no torch op runs on ``info`` unless something failed."""
    B, K = rhs.shape
    mean, var = rhs.new_empty(B, K), rhs.new_empty(B, K)
    info = torch.empty(B, dtype=torch.int32)
    flags = torch.empty(B, dtype=torch.uint8) if screen else None
    failed, flagged = FORWARD.call(_ext.C.ep_lmmse_forward, gram, rhs, lam, gam, mean, var, info, flags, B, K,
                                   num_threads())
    return (mean, var, info, flagged > 0, failed) if screen else (mean, var, info)


forward.screens_values = True


def backward(grad_mean, grad_var, gram, rhs, lam, gam):
    B, K = rhs.shape
    g_gram = gram.new_empty(B, K, K)
    g_rhs, g_lam, g_gam = (rhs.new_empty(B, K) for _ in range(3))
    BACKWARD.call(_ext.C.ep_lmmse_backward, grad_mean, grad_var, gram, rhs, lam, gam,
                  g_gram, g_rhs, g_lam, g_gam, B, K, num_threads())
    return [g_gram, g_rhs, g_lam, g_gam]


registry.get_backend("cpu").implement("ep_lmmse", forward, backward)
