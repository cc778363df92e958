"""The `cuda` and `triton` backends of mpnn_message_sum on a GPU, case by case, both out_act
forms ("none": W3 after the sum; "relu": relu(W3 h2 + b3) per pair, before the sum), against
the float64 reference backend (marked ``gpu``; tests/gpu/gpu_support.py says how they run
and skip).

Each case is a (B, N, F, E, H1, H2, Fo), a dtype and a mask: shapes that reach every tile
and launch path of the kernels (N = 1, E = 0, wide edges, tiles spanning graphs, the
persistent loop at S1, streamed senders, receiver groups, W3 in Fo chunks), masks with a
fully masked graph ("random"), every node present given as a mask ("full") or no mask, and
non-contiguous inputs. The forward and all eight gradients are compared; the cuda backend
must also give the same bits twice. A backend that refuses a case skips it, saying why.
Triton runs the cases in TRITON_CASES only (each new shape costs seconds of compiles). Then
per backend and form: float64 gradcheck, torch.library.opcheck and torch.compile through
tests/op_checks.py. compute-sanitizer (memcheck, racecheck) of the small cuda cases runs when
MIMO_FAST_GPU_SANITIZER=1. The cuda launch geometry is in every failure message.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

import mimo_fast.ops as ops
from gpu_support import DEV, EMULATE, MARKS, assert_matches, needs_device, sync, to_device
from op_checks import check_compile, check_gradcheck
from op_samples import mpnn_sample

pytestmark = MARKS

OP = "mpnn_message_sum"
NAMES = ("out", "node", "edge", "w1", "b1", "w2", "b2", "w3", "b3")
F32, F64 = torch.float32, torch.float64
# name, (B, N, F, E, H1, H2, Fo), dtype, mask ("none"; "random": ~30% of nodes masked, the
# first graph entirely; "full": every node present, given as a mask), non-contiguous
CASES = [
    ("tiny", (2, 4, 3, 2, 5, 6, 7), F32, "random", False),
    ("tiny-f64", (2, 4, 3, 2, 5, 6, 7), F64, "random", False),
    ("N1", (5, 1, 3, 2, 8, 8, 2), F32, "random", False),
    ("E0", (7, 6, 3, 0, 24, 12, 3), F32, "random", False),
    ("E0-f64", (7, 6, 3, 0, 24, 12, 3), F64, "none", False),
    ("noncontig", (6, 9, 4, 3, 40, 20, 5), F32, "random", True),
    ("S1-like", (64, 16, 16, 2, 128, 64, 16), F32, "random", False),
    ("S1-like-nomask", (64, 16, 16, 2, 128, 64, 16), F32, "none", False),
    ("S1-like-f64", (64, 16, 16, 2, 128, 64, 16), F64, "random", False),
    ("S1-full", (1024, 16, 16, 2, 128, 64, 16), F32, "random", False),     # persistent loop
    ("S2-like", (16, 64, 8, 2, 16, 8, 8), F32, "random", False),
    ("S2-like-f64", (16, 64, 8, 2, 16, 8, 8), F64, "full", False),
    ("S3-like", (4, 256, 16, 2, 64, 32, 16), F32, "random", False),        # receiver groups
    ("S3-like-f64", (2, 256, 16, 2, 64, 32, 16), F64, "none", False),
    ("N8-share-tiles", (33, 8, 4, 2, 32, 64, 4), F32, "random", False),
    ("N8-H256", (9, 8, 4, 3, 256, 128, 5), F32, "random", False),
    ("odd", (3, 37, 5, 3, 100, 40, 7), F32, "random", False),
    ("odd-f64", (3, 37, 5, 3, 100, 40, 7), F64, "random", False),
    ("sender-chunks", (2, 300, 3, 2, 16, 200, 3), F32, "random", False),
    ("H256x256", (3, 16, 8, 2, 256, 256, 4), F32, "none", False),
    ("wide-E", (2, 12, 2, 40, 8, 8, 2), F32, "random", False),
    ("wide-E-f64", (2, 12, 2, 40, 8, 8, 2), F64, "random", False),
    ("wide-E-H32", (2, 12, 2, 100, 8, 32, 2), F32, "none", False),
    ("Fo-chunks", (3, 9, 2, 2, 64, 256, 300), F32, "random", False),       # "relu": W3 in chunks
    ("Fo-wide-f64", (2, 6, 2, 2, 16, 64, 200), F64, "random", False),
]
#: triton's cases (each new shape costs Triton compiles of seconds)
TRITON_CASES = {"tiny", "tiny-f64", "N1", "E0", "noncontig", "S1-like", "odd"}
#: the cases of an emulated run (the host emulator runs every thread of a block on the CPU)
EMULATED_CASES = {"tiny", "tiny-f64", "N1", "E0", "noncontig"}
SANITIZER_CASES = ("tiny", "tiny-f64", "N1", "E0", "odd")
ACTS = ("none", "relu")


def runs():
    out = []
    for name, shape, dtype, mask, noncontig in CASES:
        for backend in (("cuda",) if EMULATE else ("cuda", "triton")):
            chosen = EMULATED_CASES if EMULATE else (TRITON_CASES if backend == "triton" else None)
            if chosen is not None and name not in chosen:
                continue
            out += [pytest.param(name, shape, dtype, mask, noncontig, backend, act, id=f"{name}-{backend}-{act}")
                    for act in ACTS]
    return out


def make_mask(B, N, kind, seed):
    if kind == "none":
        return None
    if kind == "full":
        return torch.ones(B, N, dtype=torch.bool)
    m = torch.rand(B, N, generator=torch.Generator().manual_seed(seed + 100)) > 0.3
    m[0] = False
    return m


def inputs(name, shape, dtype, mask_kind, noncontig, act, seed=0):
    B, N = shape[:2]
    s = mpnn_sample(name, *shape, dtype, seed=seed, mask=make_mask(B, N, mask_kind, seed), noncontig=noncontig,
                    out_act=act)
    *tensors, mask = to_device(s.args)
    return tensors, mask


def config_line(shape, dtype, act):
    """The cuda backend's launch geometry for this case."""
    from mimo_fast.ops.cuda import mpnn_message_sum as glue
    B, N, F, E, H1, H2, Fo = shape
    c = glue.launch_config(B, N, E, H1, H2, Fo, dtype, act == "relu", torch.cuda.current_device() if DEV.type == "cuda" else 0)
    if c["refusal"]:
        return f"refused: {c['refusal']}"
    f, b = c["fwd"], c["bwd"]
    return (f"H1P {c['H1P']} H2P {c['H2P']} | fwd TM{f['TM']}xTN{f['TN']} BM {f['BM']} (RN {f['RN']} x BJ {f['BJ']}) "
            f"FC {f['FC']} blocks {f['blocks']} smem {f['smem'] // 1024}K | bwd TM{b['TM']} BM {b['BM']} (RN {b['RN']} "
            f"x BJ {b['BJ']}) FC {b['FC']} CW {b['CW']} S {b['S']} RG {b['RG']} G {b['G']} items {b['items']} "
            f"blocks {b['blocks']} smem {b['smem'] // 1024}K")


@contextlib.contextmanager
def _emulated_cuda_backend():
    """Under MIMO_FAST_GPU_TESTS=emulate: the cuda backend's glue drives the CPU emulation of
    the kernels (built as tests/test_mpnn_message_sum_cuda_emulation.py builds it) on CPU tensors."""
    import importlib.util

    from mimo_fast import _ext
    from mimo_fast.ops import registry
    from mimo_fast.ops.cuda import mpnn_message_sum as glue
    from test_mpnn_message_sum_cuda_emulation import _build
    spec = importlib.util.spec_from_file_location("_cuda_emulation", _build())
    emu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emu)
    cuda = registry.get_backend("cuda")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_ext, "C_CUDA", emu)
        # as tests/test_mpnn_message_sum_cuda_emulation.py's on_emulation: no device, stream 0
        mp.setattr(glue, "_launch_context", lambda t: (contextlib.nullcontext(), 0, "cpu"))
        mp.setattr(cuda, "devices", ("cuda", "cpu"))
        mp.setattr(cuda, "unavailable", lambda: None)
        glue.device_limits.cache_clear()
        glue._launch_config.cache_clear()
        yield
    glue.device_limits.cache_clear()
    glue._launch_config.cache_clear()


@pytest.fixture(scope="module")
def backends():
    with (_emulated_cuda_backend() if EMULATE else contextlib.nullcontext()):
        yield


@pytest.mark.parametrize("name,shape,dtype,mask_kind,noncontig,backend,act", runs())
def test_values_gradients_and_determinism(backends, name, shape, dtype, mask_kind, noncontig, backend, act):
    from mimo_fast.ops import registry
    tensors, mask = inputs(name, shape, dtype, mask_kind, noncontig, act)
    why = registry.get_backend(backend).refusal(OP, tuple(tensors), explicit=True)
    if why:
        pytest.skip(f"{backend} refuses {name} ({act}): {why}")
    where = f"{name} [{backend}, {act}] {shape} {str(dtype)[6:]} mask={mask_kind}"
    if backend == "cuda":
        where += f" | {config_line(shape, dtype, act)}"
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = ops.mpnn_message_sum(*leaves, mask, out_act=act, backend=backend)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=F64).to(DEV)
    grads = torch.autograd.grad(out, leaves, grad_out.to(dtype))
    sync()
    wide = [t.detach().double().requires_grad_() for t in tensors]
    ref = ops.mpnn_message_sum(*wide, mask, out_act=act, backend="reference")
    want = [ref.detach(), *torch.autograd.grad(ref, wide, grad_out)]
    for what, g, w in zip(NAMES, [out, *grads], want):
        assert torch.isfinite(g).all(), f"{where}: {what} has non-finite values"
        assert_matches(g, w, dtype, f"{where}: {what}", backend)
    if backend == "cuda":   # the cuda backend promises bitwise determinism
        again = ops.mpnn_message_sum(*leaves, mask, out_act=act, backend=backend)
        grads2 = torch.autograd.grad(again, leaves, grad_out.to(dtype))
        assert torch.equal(again, out) and all(torch.equal(a, b) for a, b in zip(grads, grads2)), \
            f"{where}: a second run gave different bits"


def api_sample(act, dtype=F64):
    """Small, masked: one graph fully masked, one complete."""
    mask = make_mask(3, 5, "random", 11)
    mask[1] = True
    s = mpnn_sample("api", 3, 5, 2, 2, 6, 5, 3, dtype, seed=11, mask=mask, out_act=act)
    s.args = tuple(to_device(s.args))
    return s


@needs_device
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gradcheck_opcheck_compile(backend, act):
    from mimo_fast.ops import registry
    s = api_sample(act)
    why = registry.get_backend(backend).refusal(OP, tuple(t for t in s.args if t is not None), explicit=True)
    if why:
        pytest.skip(f"{backend} refuses the sample: {why}")
    check_gradcheck(ops.mpnn_message_sum, s, backend)
    *tensors, mask = s.args
    torch.library.opcheck(torch.ops.mimo_fast.mpnn_message_sum.default,
                          (*[t.detach().clone().requires_grad_() for t in tensors], mask, act, backend))
    check_compile(ops.mpnn_message_sum, api_sample(act, F32), backend)


SANITIZER = shutil.which("compute-sanitizer")


@needs_device
@pytest.mark.skipif(not os.environ.get("MIMO_FAST_GPU_SANITIZER") or SANITIZER is None,
                    reason="set MIMO_FAST_GPU_SANITIZER=1, with compute-sanitizer on PATH, to run it (minutes)")
@pytest.mark.parametrize("tool", ["memcheck", "racecheck"])
def test_compute_sanitizer(tool):
    """The small cuda cases of this file in a pytest process under compute-sanitizer."""
    here = pathlib.Path(__file__).resolve()
    select = " or ".join(f"{c}-cuda-" for c in SANITIZER_CASES)
    pytest_bin = pathlib.Path(sys.executable).parent / "pytest"
    cmd = [SANITIZER, "--tool", tool, "--error-exitcode", "3", str(pytest_bin), "-q", "-p", "no:cacheprovider",
           str(here), "-k", f"test_values_gradients_and_determinism and ({select})"]
    env = {k: v for k, v in os.environ.items() if k != "MIMO_FAST_GPU_SANITIZER"}
    # cwd: tests/ (not the repository root: the tests import the installed package)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=here.parents[1])
    assert res.returncode == 0, f"compute-sanitizer {tool} (exit {res.returncode}):\n" + (res.stdout + res.stderr)[-3000:]
