"""Checks every op gets, run on its shared sample list (tests/op_samples.py) for every
backend that can serve the sample: values and gradients against the independent oracle,
gradcheck in float64, torch.library.opcheck, and torch.compile(fullgraph=True)."""
from __future__ import annotations

import torch

from mimo_fast.ops import registry
from op_samples import Sample, floating


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def upcast(args):
    """float64/complex128 copies (leaves) of the floating args, others unchanged."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_complex():
            out.append(a.detach().to(torch.complex128))
        elif isinstance(a, torch.Tensor) and a.is_floating_point():
            out.append(a.detach().to(torch.float64))
        else:
            out.append(a)
    return out


def assert_close(got, want, backend: str, dtype, what: str):
    rtol, atol = registry.get_backend(backend).tolerance(dtype)
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    torch.testing.assert_close(got.to(want.dtype), want, rtol=rtol, atol=atol * scale,
                               msg=lambda m: f"{what} ({backend}, {dtype}): {m}")


def check_values(fn, oracle, sample: Sample, backend: str):
    got = _as_tuple(fn(*sample.args, **sample.kwargs, backend=backend))
    want = _as_tuple(oracle(*upcast(sample.args), **sample.kwargs))
    assert len(got) == len(want)
    dtype = sample.args[0].dtype
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype.to_real() == dtype.to_real(), f"output {i}: dtype {g.dtype} for {dtype} inputs"
        assert g.shape == w.shape, f"output {i}: shape {g.shape} != {w.shape}"
        assert torch.isfinite(torch.view_as_real(g) if g.is_complex() else g).all()
        assert_close(g, w, backend, dtype, f"output {i}")


def check_grads(fn, oracle, sample: Sample, backend: str, seed: int = 0):
    """Gradients of a random projection of all outputs, op vs autograd through the oracle."""
    idx = floating(sample.args)
    args = [a.detach().clone().requires_grad_() if i in idx else a for i, a in enumerate(sample.args)]
    ref_args = upcast(sample.args)
    for i in idx:
        ref_args[i].requires_grad_()
    got, want = _as_tuple(fn(*args, **sample.kwargs, backend=backend)), _as_tuple(oracle(*ref_args, **sample.kwargs))
    g = torch.Generator().manual_seed(seed)
    proj = [torch.randn(w.shape, generator=g, dtype=w.dtype).to(w.device) for w in want]
    loss = sum((o * p.to(o.dtype)).real.sum() if o.is_complex() else (o * p.to(o.dtype)).sum()
               for o, p in zip(got, proj))
    ref_loss = sum((o * p).real.sum() if o.is_complex() else (o * p).sum() for o, p in zip(want, proj))
    grads = torch.autograd.grad(loss, [args[i] for i in idx])
    ref_grads = (torch.autograd.grad(ref_loss, [ref_args[i] for i in idx], allow_unused=True)
                 if ref_loss.requires_grad else [None] * len(idx))  # output independent of inputs
    for i, gg, rg in zip(idx, grads, ref_grads):
        rg = torch.zeros_like(ref_args[i]) if rg is None else rg
        assert gg.shape == args[i].shape and gg.dtype == args[i].dtype
        assert_close(gg, rg, backend, sample.args[0].dtype, f"gradient of argument {i}")


def interpreted(backend: str, sample: Sample) -> bool:
    """True when this backend runs the sample through the Triton interpreter (CPU tensors)."""
    return backend == "triton" and sample.args[0].device.type == "cpu"


def check_gradcheck(fn, sample: Sample, backend: str):
    """Full gradcheck, except under the Triton interpreter: there the numerical Jacobian
    (two forward launches per input element, each interpreted op by op) would take minutes
    per sample, so it checks a random projection (fast_mode); check_grads still compares
    every gradient with autograd through the oracle."""
    idx = floating(sample.args)
    args = [a.detach().clone().requires_grad_() if i in idx else a for i, a in enumerate(sample.args)]

    def f(*xs):
        full = list(args)
        for i, x in zip(idx, xs):
            full[i] = x
        return fn(*full, **sample.kwargs, backend=backend)

    assert torch.autograd.gradcheck(f, [args[i] for i in idx], eps=1e-6, atol=1e-5, rtol=1e-4,
                                    fast_mode=interpreted(backend, sample))


def check_compile(fn, sample: Sample, backend: str):
    # `loss` below is one code object for every sample and backend: without a reset,
    # dynamo counts each (backend, dtype, shape) as a recompile and stops at its limit.
    torch._dynamo.reset()
    idx = floating(sample.args)

    def loss(*xs):
        outs = _as_tuple(fn(*xs, **sample.kwargs, backend=backend))
        return sum((o.abs() if o.is_complex() else o).square().sum() for o in outs)

    compiled = torch.compile(loss, fullgraph=True)
    eager_args = [a.detach().clone().requires_grad_() if i in idx else a for i, a in enumerate(sample.args)]
    comp_args = [a.detach().clone().requires_grad_() if i in idx else a for i, a in enumerate(sample.args)]
    l_eager, l_comp = loss(*eager_args), compiled(*comp_args)
    torch.testing.assert_close(l_comp, l_eager)
    g_eager = torch.autograd.grad(l_eager, [eager_args[i] for i in idx])
    g_comp = torch.autograd.grad(l_comp, [comp_args[i] for i in idx])
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b)
