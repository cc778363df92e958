"""``mimo_fast::ep_lmmse``: the LMMSE step of expectation propagation, batched.

    A = gram + diag(lam),   mean = A^{-1} (rhs + gam),   var = diag(A^{-1})

(Kosasih et al. / the E2E paper's eq. (6)-(7) with gram = H^T H / sigma^2 and
rhs = H^T y / sigma^2.) ``gram`` is read through its symmetric part (gram + gram^T)/2,
so its gradient is symmetric. A matrix that is not positive definite raises
:class:`NotPositiveDefiniteError` naming the batch index; :func:`ep_lmmse_ex` returns a
per-matrix status instead, like ``torch.linalg.cholesky_ex``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mimo_fast.ops import eager
from mimo_fast.ops import registry
from mimo_fast.ops import validate as V

OP = "ep_lmmse"
#: Forms of this op whose GPU kernels passed the test suite on a real GPU, per backend ("" the
#: plain form): Triton on an NVIDIA H100 (torch 2.11 + CUDA 13, Triton 3.6), 2026-11-22 --
#: bench/results/h100/gpu_h100_tests.md. The CUDA kernels have run only in the host emulator.
GPU_VALIDATED = {"triton": {""}}
registry.declare_limits(OP, gpu_validated=GPU_VALIDATED)


class NotPositiveDefiniteError(torch.linalg.LinAlgError):
    """gram + diag(lam) is not positive definite for at least one batch element."""

    def __init__(self, message: str, batch_index: int, order: int):
        super().__init__(message)
        self.batch_index = batch_index
        self.order = order


def check(gram, rhs, lam, gam, op: str = OP) -> None:
    """Shapes, dtypes and devices of an LMMSE system; ``op`` names the op in errors
    (:mod:`mimo_fast.ops.ep_iteration` checks its own inputs with it)."""
    for name, t in (("gram", gram), ("rhs", rhs), ("lam", lam), ("gam", gam)):
        V.tensor(name, t, op)
    V.dtype_in("gram", gram, V.REAL_DTYPES, op)
    V.ndim("gram", gram, 3, op, ("B", "K", "K"))
    B, K, _ = gram.shape
    V.positive_size("gram", K, "row (K >= 1)", op)
    V.shape("gram", gram, (B, K, K), op, ("B", "K", "K"))
    for name, t in (("rhs", rhs), ("lam", lam), ("gam", gam)):
        V.shape(name, t, (B, K), op, ("B", "K"))
        V.same_dtype(name, t, gram.dtype, "gram", op)
        V.same_device(name, t, gram, "gram", op)


def _check_values(gram, rhs, lam, gam) -> None:
    if V.value_checks_enabled():
        V.values(OP, [("gram", gram), ("rhs", rhs), ("lam", lam), ("gam", gam)], [("lam", lam, True)])


def raise_on_failure(info: Tensor) -> None:
    if info.device.type != "cpu" and not bool(info.ne(0).any()):
        return          # one sync on a GPU; nonzero() below would cost a second
    bad = (info != 0).nonzero()
    if bad.numel():
        b = int(bad[0, 0])
        order = int(info[b])
        raise NotPositiveDefiniteError(
            f"{OP}: A = gram + diag(lam) is not positive definite for batch index {b} "
            f"(leading minor of order {order}); {bad.shape[0]} matrix(es) failed. "
            "Use mimo_fast.ops.ep_lmmse_ex for a per-matrix status instead of this error.",
            batch_index=b, order=order)


def _forward(gram: Tensor, rhs: Tensor, lam: Tensor, gam: Tensor, backend: str,
             check_errors: bool) -> tuple[Tensor, Tensor, Tensor]:
    check(gram, rhs, lam, gam)
    impl = registry.resolve(OP, backend, (gram, rhs)).ops[OP]
    if V.value_checks_enabled() and getattr(impl.forward, "screens_values", False):
        # The kernel screens its inputs as it reads them; only a flagged call pays for the
        # full scan, which raises naming the argument and index.
        mean, var, info, flagged, failed = impl.forward(gram, rhs, lam, gam, screen=True)
        if flagged:
            _check_values(gram, rhs, lam, gam)
        if check_errors and failed:
            raise_on_failure(info)
        return mean, var, info
    _check_values(gram, rhs, lam, gam)
    mean, var, info = impl.forward(gram, rhs, lam, gam)
    if check_errors:
        raise_on_failure(info)
    return mean, var, info


_op = torch.library.custom_op("mimo_fast::ep_lmmse", mutates_args=())(_forward)


@_op.register_fake
def _(gram, rhs, lam, gam, backend, check_errors):
    check(gram, rhs, lam, gam)
    B, K = rhs.shape
    return rhs.new_empty(B, K), rhs.new_empty(B, K), rhs.new_empty(B, dtype=torch.int32)


@torch.library.custom_op("mimo_fast::ep_lmmse_backward", mutates_args=())
def _backward_op(grad_mean: Tensor, grad_var: Tensor, gram: Tensor, rhs: Tensor, lam: Tensor,
                 gam: Tensor, backend: str) -> list[Tensor]:
    impl = registry.resolve(OP, backend, (gram, rhs)).ops[OP]
    return list(impl.backward(grad_mean.contiguous(), grad_var.contiguous(), gram, rhs, lam, gam))


@_backward_op.register_fake
def _(grad_mean, grad_var, gram, rhs, lam, gam, backend):
    return [torch.empty_like(t) for t in (gram, rhs, lam, gam)]


def _setup_context(ctx, inputs, output):
    gram, rhs, lam, gam, backend, _ = inputs
    ctx.save_for_backward(gram, rhs, lam, gam)
    ctx.backend = backend


def _backward(ctx, grad_mean, grad_var, _grad_info):
    gram, rhs, lam, gam = ctx.saved_tensors
    if grad_mean is None:
        grad_mean = torch.zeros_like(rhs)
    if grad_var is None:
        grad_var = torch.zeros_like(rhs)
    grads = _backward_op(grad_mean, grad_var, gram, rhs, lam, gam, ctx.backend)
    needs = ctx.needs_input_grad
    return (*[g if needs[i] else None for i, g in enumerate(grads)], None, None)


_op.register_autograd(_backward, setup_context=_setup_context)


def _call(gram, rhs, lam, gam, backend, check_errors):
    for name, t in (("gram", gram), ("rhs", rhs), ("lam", lam), ("gam", gam)):
        V.tensor(name, t, OP)
    run = eager.pick(OP, _forward, _op, gram, rhs, lam, gam)
    return run(gram, rhs, lam, gam, registry.backend_arg(backend), check_errors)


def ep_lmmse(gram: Tensor, rhs: Tensor, lam: Tensor, gam: Tensor, *,
             backend: Optional[str] = None) -> tuple[Tensor, Tensor]:
    r"""The LMMSE step of expectation propagation.

    .. math::
        A = G + \mathrm{diag}(\lambda),\quad \mu = A^{-1}(r + \gamma),\quad
        v = \mathrm{diag}(A^{-1})

    Args:
        gram: ``(B, K, K)`` symmetric positive semi-definite, e.g. ``H^T H / sigma^2``.
        rhs: ``(B, K)``, e.g. ``H^T y / sigma^2``.
        lam: ``(B, K)`` cavity precisions, > 0.
        gam: ``(B, K)`` cavity precision-times-mean.
        backend: ``None`` (fastest available) or a backend name.

    Returns:
        ``(mean, var)``, each ``(B, K)``.

    Raises:
        NotPositiveDefiniteError: ``A`` is not positive definite; names the batch index.
    """
    mean, var, _ = _call(gram, rhs, lam, gam, backend, True)
    return mean, var


def ep_lmmse_ex(gram: Tensor, rhs: Tensor, lam: Tensor, gam: Tensor, *,
                backend: Optional[str] = None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`ep_lmmse` that reports failures instead of raising.

    Returns ``(mean, var, info)``: ``info`` is ``(B,)`` int32, 0 where ``A`` was
    factorised and otherwise the order of its first non-positive leading minor; the
    ``mean`` and ``var`` rows of such matrices are NaN (as are their gradients).
    """
    return _call(gram, rhs, lam, gam, backend, False)
