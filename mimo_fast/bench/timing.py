"""The timing behind ``mimo-fast bench`` (:mod:`mimo_fast.cli.bench`): time each op on the
standard shapes with every backend that can serve them, next to the plain-PyTorch
baselines, check every answer against the reference, and print medians and ratios. (The
pytest-benchmark suite in the repository's bench/ folder is the committed, more thorough
version of the same.)"""
from __future__ import annotations

import statistics
import time
import warnings

import torch

import mimo_fast.ops as ops
from mimo_fast.bench import baselines, shapes
from mimo_fast.ops import registry

OPS = {
    "mpnn_message_sum": ("mpnn", ops.mpnn_message_sum, shapes.mpnn_inputs, shapes.MPNN,
                         {"naive eager": baselines.mpnn_naive, "careful eager": baselines.mpnn_careful}),
    "ep_lmmse": ("ep", ops.ep_lmmse, shapes.ep_inputs, shapes.EP, {"torch.linalg": baselines.ep_linalg}),
    "amp_step": ("amp", ops.amp_step, shapes.amp_inputs, shapes.AMP, {"eager formula": baselines.amp_eager}),
}


def _outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _loss(out):
    return sum((o.abs() if o.is_complex() else o).sum() for o in _outputs(out))


def time_call(fn, args, *, backward: bool, repeat: int, device) -> float:
    """Median seconds of ``fn(*args)`` (plus a backward pass when asked), after one warm-up."""
    def once():
        if backward:
            leaves = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) and (a.is_floating_point() or a.is_complex()) else a
                      for a in args]
            _loss(fn(*leaves)).backward()
        else:
            with torch.no_grad():
                fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    once()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _check(out, ref, backend: str) -> str:
    rtol, atol = registry.get_backend(backend if backend in registry.backends() else "cpu").tolerance(ref[0].dtype)
    for o, r in zip(_outputs(out), ref):
        scale = max(1.0, float(r.abs().max()))
        if not torch.allclose(o, r, rtol=max(rtol, 1e-4), atol=max(atol, 1e-5) * scale, equal_nan=False):
            return f"MISMATCH (max abs diff {float((o - r).abs().max()):.3g})"
    return "ok"


def time_ops(op_names, *, quick=False, backward=False, repeat=5, device="cpu", shape_names=None):
    """Time ``op_names`` (keys of :data:`OPS`); prints a line per implementation and returns the rows."""
    device = torch.device(device)
    rows = []
    for op in op_names:
        key, fn, make, table, plain = OPS[op]
        table = shapes.QUICK[key] if quick else table
        for sname, dims in table.items():
            if shape_names and sname not in shape_names:
                continue
            args = make(*dims, device=device, gen=torch.Generator().manual_seed(0))
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = _outputs(fn(*args, backend="reference"))
            impls = dict(plain)
            tensors = tuple(a for a in args if isinstance(a, torch.Tensor))
            for bname, why in registry.explain(op, tensors).items():
                if why is None:
                    impls[f"backend {bname}"] = (lambda b: lambda *a: fn(*a, backend=b))(bname)
            base = None
            for name, impl in impls.items():
                with torch.no_grad():
                    check = _check(impl(*args), ref, name.split()[-1])
                sec = time_call(impl, args, backward=backward, repeat=repeat, device=device)
                base = base or sec
                rows.append({"op": op, "shape": sname, "impl": name, "pass": "fwd+bwd" if backward else "fwd",
                             "median_ms": sec * 1e3, "speedup_vs_first": base / sec, "check": check})
                print(f"{op:<17} {sname:<14} {name:<22} {sec * 1e3:10.2f} ms  x{base / sec:6.2f}  {check}", flush=True)
    return rows


__all__ = ["OPS", "time_call", "time_ops"]
