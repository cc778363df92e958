"""``mimo_fast::amp_step``: the matched-filter / Onsager step of complex AMP
(AMP-GNN paper, Algorithm 1, eqs. (8a)-(8d)):

    V     = |H|^2 v                                             (8a)
    z     = H x - V * (y - z_prev) / (noise_var + V_prev)       (8b)
    Sigma = 1 / (|H|^2^T (1 / (noise_var + V)))                 (8c)
    r     = x + Sigma * H^H ((y - z) / (noise_var + V))         (8d)

On the first iteration pass ``z_prev = y`` (the Onsager term vanishes).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mimo_fast.ops import eager
from mimo_fast.ops import registry
from mimo_fast.ops import validate as V

OP = "amp_step"
#: Forms of this op whose GPU kernels passed the test suite on a real GPU, per backend ("" the
#: plain form): Triton on an NVIDIA H100 (torch 2.11 + CUDA 13, Triton 3.6), 2026-11-22 --
#: bench/results/h100/gpu_h100_tests.md. The CUDA kernels have run only in the host emulator.
GPU_VALIDATED = {"triton": {""}}
registry.declare_limits(OP, gpu_validated=GPU_VALIDATED)

_NAMES = ("H", "y", "x", "v", "z_prev", "V_prev", "noise_var")


def check(H, y, x, v, z_prev, V_prev, noise_var) -> None:
    for name, t in zip(_NAMES, (H, y, x, v, z_prev, V_prev, noise_var)):
        V.tensor(name, t, OP)
    V.dtype_in("H", H, V.COMPLEX_DTYPES, OP)
    V.ndim("H", H, 3, OP, ("B", "M", "N"))
    B, M, N = H.shape
    V.positive_size("H", M, "row (M >= 1)", OP)
    V.positive_size("H", N, "column (N >= 1)", OP)
    real = H.dtype.to_real()
    for name, t, shp, names, dt in (
        ("y", y, (B, M), ("B", "M"), H.dtype), ("x", x, (B, N), ("B", "N"), H.dtype),
        ("v", v, (B, N), ("B", "N"), real), ("z_prev", z_prev, (B, M), ("B", "M"), H.dtype),
        ("V_prev", V_prev, (B, M), ("B", "M"), real), ("noise_var", noise_var, (B,), ("B",), real),
    ):
        V.shape(name, t, shp, OP, names)
        if t.dtype != dt:
            raise TypeError(f"{OP}: {name} must have dtype {dt} (H is {H.dtype}), got {t.dtype}")
        V.same_device(name, t, H, "H", OP)


def _check_values(H, y, x, v, z_prev, V_prev, noise_var) -> None:
    if V.value_checks_enabled():
        V.values(OP, list(zip(_NAMES, (H, y, x, v, z_prev, V_prev, noise_var))),
                 [("noise_var", noise_var, True), ("v", v, False), ("V_prev", V_prev, False)])


def _forward(H: Tensor, y: Tensor, x: Tensor, v: Tensor, z_prev: Tensor, V_prev: Tensor,
             noise_var: Tensor, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    check(H, y, x, v, z_prev, V_prev, noise_var)
    _check_values(H, y, x, v, z_prev, V_prev, noise_var)
    impl = registry.resolve(OP, backend, (H, y)).ops[OP]
    return tuple(impl.forward(H, y, x, v, z_prev, V_prev, noise_var))


_op = torch.library.custom_op("mimo_fast::amp_step", mutates_args=())(_forward)


@_op.register_fake
def _(H, y, x, v, z_prev, V_prev, noise_var, backend):
    check(H, y, x, v, z_prev, V_prev, noise_var)
    return torch.empty_like(x), torch.empty_like(v), torch.empty_like(y), torch.empty_like(V_prev)


@torch.library.custom_op("mimo_fast::amp_step_backward", mutates_args=())
def _backward_op(grad_r: Tensor, grad_Sigma: Tensor, grad_z: Tensor, grad_V: Tensor, H: Tensor,
                 y: Tensor, x: Tensor, v: Tensor, z_prev: Tensor, V_prev: Tensor,
                 noise_var: Tensor, backend: str) -> list[Tensor]:
    impl = registry.resolve(OP, backend, (H, y)).ops[OP]
    return list(impl.backward(grad_r.contiguous(), grad_Sigma.contiguous(), grad_z.contiguous(),
                              grad_V.contiguous(), H, y, x, v, z_prev, V_prev, noise_var))


@_backward_op.register_fake
def _(grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var, backend):
    return [torch.empty_like(t) for t in (H, y, x, v, z_prev, V_prev, noise_var)]


def _setup_context(ctx, inputs, output):
    *tensors, backend = inputs
    ctx.save_for_backward(*tensors)
    ctx.backend = backend


def _backward(ctx, grad_r, grad_Sigma, grad_z, grad_V):
    H, y, x, v, z_prev, V_prev, noise_var = ctx.saved_tensors
    grads_out = [torch.zeros_like(like) if g is None else g
                 for g, like in ((grad_r, x), (grad_Sigma, v), (grad_z, y), (grad_V, V_prev))]
    grads = _backward_op(*grads_out, H, y, x, v, z_prev, V_prev, noise_var, ctx.backend)
    needs = ctx.needs_input_grad
    return (*[g if needs[i] else None for i, g in enumerate(grads)], None)


_op.register_autograd(_backward, setup_context=_setup_context)


def amp_step(H: Tensor, y: Tensor, x: Tensor, v: Tensor, z_prev: Tensor, V_prev: Tensor,
             noise_var, *, backend: Optional[str] = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""One matched-filter / Onsager step of complex AMP (AMP-GNN paper, eqs. 8a-8d).

    Args:
        H: ``(B, M, N)`` complex64/complex128 channel.
        y: ``(B, M)`` complex received vector.
        x: ``(B, N)`` complex current estimate; v: ``(B, N)`` real variance, >= 0.
        z_prev: ``(B, M)`` complex previous ``z`` (``y`` on the first iteration).
        V_prev: ``(B, M)`` real previous ``V``, >= 0.
        noise_var: ``(B,)`` real > 0, or a Python float used for every batch element.
        backend: ``None`` (fastest available) or a backend name.

    Returns:
        ``(r, Sigma, z, V)``: ``(B, N)`` complex, ``(B, N)`` real, ``(B, M)`` complex,
        ``(B, M)`` real. Every floating input gets a gradient (PyTorch's convention for
        complex inputs).
    """
    for name, t in zip(_NAMES[:-1], (H, y, x, v, z_prev, V_prev)):
        V.tensor(name, t, OP)
    if isinstance(noise_var, (int, float)) and not isinstance(noise_var, bool):
        # H's own checks first: a float noise_var is expanded to (B,) from H's dtype and
        # batch size, so a real or 0-d H must be named as the problem (not noise_var)
        V.dtype_in("H", H, V.COMPLEX_DTYPES, OP)
        V.ndim("H", H, 3, OP, ("B", "M", "N"))
        # the real dtype by table: torch.compile cannot trace torch.dtype.to_real()
        real = torch.float32 if H.dtype == torch.complex64 else torch.float64
        noise_var = torch.full((H.shape[0],), float(noise_var), dtype=real, device=H.device)
    V.tensor("noise_var", noise_var, OP)
    run = eager.pick(OP, _forward, _op, H, y, x, v, z_prev, V_prev, noise_var)
    return run(H, y, x, v, z_prev, V_prev, noise_var, registry.backend_arg(backend))
