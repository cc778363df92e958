"""The CUDA kernels of mpnn_message_sum, run on the CPU.

The .cu sources are compiled as C++ against tests/cuda_emulation/cuda_runtime.h (each block
on 256 threads with real barriers and warp shuffles, shared memory filled with NaN bytes
before every block) into a module with the same functions as ``mimo_fast._C_cuda``. The
real glue (mimo_fast/ops/cuda/mpnn_message_sum.py) drives it on CPU tensors, and values
and gradients are compared with the reference. This checks the kernels' index arithmetic,
barriers, reductions, launch geometry and glue on a machine without a GPU; timing,
occupancy and GPU numerics are for test_mpnn_message_sum_cuda.py on a GPU.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sysconfig
import tempfile

import pytest
import torch

from mimo_fast import _ext
from mimo_fast.ops.cuda import mpnn_message_sum as glue
from mimo_fast.ops.reference import mpnn_message_sum as ref
from op_checks import assert_close
from op_samples import mpnn_sample

ROOT = pathlib.Path(__file__).resolve().parents[1]
EMU = ROOT / "tests" / "cuda_emulation"
SOURCES = [ROOT / "csrc/mpnn_message_sum/mpnn_message_sum.cu", ROOT / "csrc/mpnn_message_sum/mpnn_message_sum_backward.cu"]
DEPENDS = SOURCES + sorted((ROOT / "csrc/mpnn_message_sum").glob("*.cuh")) + [
    ROOT / "csrc/common/cuda_utils.cuh", EMU / "cuda_runtime.h", EMU / "module.cpp"]


def _build() -> pathlib.Path:
    """Compile the emulation module once per source version (cached in the temp folder)."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        pytest.skip("no C++ compiler (g++) to build the CPU emulation of the CUDA kernels")
    try:
        import pybind11
    except ImportError:
        pytest.skip("pybind11 is not installed: the CPU emulation of the CUDA kernels needs its headers")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in DEPENDS) + cxx.encode()).hexdigest()[:16]
    out_dir = pathlib.Path(tempfile.gettempdir()) / "mimo_fast_cuda_emulation" / digest
    out = out_dir / ("_cuda_emulation" + sysconfig.get_config_var("EXT_SUFFIX"))
    if not out.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cxx, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-w", f"-I{ROOT / 'csrc'}", f"-I{EMU}",
               f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}",
               "-x", "c++", *map(str, SOURCES), "-x", "none", str(EMU / "module.cpp"), "-o", str(tmp)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            pytest.fail(f"building the CPU emulation failed:\n{' '.join(cmd)}\n{res.stderr[-4000:]}")
        os.replace(tmp, out)
    return out


@pytest.fixture(scope="module")
def emu():
    path = _build()
    spec = importlib.util.spec_from_file_location("_cuda_emulation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def on_emulation(emu, monkeypatch):
    """The glue, talking to the emulation on CPU tensors; its scratch and output buffers
    start as NaN, so an element a kernel forgets to write fails the comparison."""
    monkeypatch.setattr(_ext, "C_CUDA", emu)
    monkeypatch.setattr(glue, "_launch_context", lambda t: (contextlib.nullcontext(), 0))
    glue.device_limits.cache_clear()
    new_empty = torch.Tensor.new_empty

    def nan_empty(self, *size, **kw):
        t = new_empty(self, *size, **kw)
        return t.fill_(float("nan")) if t.is_floating_point() else t
    monkeypatch.setattr(torch.Tensor, "new_empty", nan_empty)
    yield emu
    glue.device_limits.cache_clear()


def _mask(B, N, seed):
    m = torch.rand(B, N, generator=torch.Generator().manual_seed(seed)) > 0.3
    m[0] = False                       # a graph with every node masked
    if B > 1:
        m[1] = True
    return m


# name, (B, N, F, E, H1, H2, Fo), masked: each exercises a path of the kernels (see
# test_cases_cover_every_kernel_variant for the register-block variants)
CASES = [
    ("basic", (2, 4, 3, 2, 5, 6, 7), False),
    ("masked", (3, 5, 2, 3, 8, 4, 3), True),
    ("N1", (2, 1, 3, 2, 4, 3, 2), True),
    ("E0", (2, 3, 2, 0, 4, 3, 2), False),
    ("wide-E", (2, 6, 3, 5, 12, 10, 3), True),
    ("h1-two-chunks", (2, 9, 4, 2, 100, 40, 5), True),        # H1P 128: two CW chunks; S = 1
    ("sender-chunks", (1, 70, 3, 2, 16, 200, 3), False),      # H2P 256: several sender chunks (f32 only)
    ("receiver-groups", (2, 20, 3, 2, 40, 33, 4), True),      # G > 1 gsend partials
    ("N8-H64", (3, 8, 4, 2, 32, 64, 4), True),                 # tiles spanning batch elements
    ("H2-128", (2, 12, 4, 2, 64, 128, 4), False),
    ("S1-like", (3, 16, 16, 2, 128, 64, 16), True),
    ("S2-like", (2, 64, 8, 2, 16, 8, 8), True),
    ("S3-like", (1, 100, 16, 2, 64, 32, 16), False),          # backward: several sender chunks
    # wide edges: forward tiles shrink to fit shared memory (the narrower register blocks)
    ("E24", (1, 12, 2, 24, 8, 8, 2), True),
    ("E40", (1, 12, 2, 40, 8, 8, 2), False),
    ("E48-H32", (1, 12, 2, 48, 8, 32, 2), True),
    ("E100-H32", (1, 12, 2, 100, 8, 32, 2), False),
]

#: the register blocks compiled (mpnn_message_sum.cu launch_fwd, mpnn_message_sum_backward.cu)
FWD_VARIANTS = {(0, 8, 8), (0, 4, 8), (0, 2, 8), (0, 8, 4), (0, 4, 4), (0, 2, 4), (1, 4, 4), (1, 2, 4), (1, 1, 4)}
BWD_VARIANTS = {(0, 1), (0, 2), (0, 4), (0, 8), (1, 1), (1, 2), (1, 4)}
#: float64 with H2P = 256 needs more shared memory than a GPU has: refused (test_refusal)
REFUSED = {("sender-chunks", torch.float64)}


def _sample(shape, dtype, masked, seed=0):
    B, N = shape[:2]
    return mpnn_sample("emu", *shape, dtype, seed=seed, mask=_mask(B, N, seed) if masked else None).args


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,shape,masked", CASES, ids=[c[0] for c in CASES])
def test_values_and_gradients(on_emulation, name, shape, masked, dtype):
    if (name, dtype) in REFUSED:
        pytest.skip("refused by the cuda backend (test_refusal_is_raised_before_any_kernel)")
    *tensors, mask = _sample(shape, dtype, masked)
    wide = [t.double() for t in tensors]
    out = glue.forward(*tensors, mask)
    assert_close(out, ref.forward(*wide, mask), "cuda", dtype, f"{name}: forward")
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = glue.backward(grad.to(dtype), *tensors, mask)
    want = ref.backward(grad, *wide, mask)
    for what, g, w in zip(("node", "edge", "w1", "b1", "w2", "b2", "w3", "b3"), got, want):
        assert g.shape == w.shape and g.dtype == dtype, what
        assert_close(g, w, "cuda", dtype, f"{name}: gradient of {what}")


def test_cases_cover_every_kernel_variant(emu):
    """Every compiled register block (forward TM x TN per dtype, backward TM per dtype) and
    both GEMM2 modes run in the value tests above."""
    fwd, bwd, splits = set(), set(), set()
    for name, shape, _ in CASES:
        for code, dtype in ((0, torch.float32), (1, torch.float64)):
            c = emu.mpnn_message_sum_launch_config(*shape, code)
            if (name, dtype) in REFUSED:
                assert c["refusal"]
                continue
            fwd.add((code, c["fwd"]["TM"], c["fwd"]["TN"]))
            bwd.add((code, c["bwd"]["TM"]))
            splits.add(c["bwd"]["S"] > 1)
    assert fwd == FWD_VARIANTS and bwd == BWD_VARIANTS and splits == {False, True}, (fwd, bwd, splits)


def test_refusal_is_raised_before_any_kernel(on_emulation):
    *tensors, mask = _sample((1, 70, 3, 2, 16, 200, 3), torch.float64, False)
    reason = glue.refuse(*tensors)
    assert reason and "shared memory" in reason and "H2=200" in reason
    with pytest.raises(ValueError, match="shared memory"):
        glue.forward(*tensors, mask)
    too_wide = _sample((1, 3, 2, 1, 300, 4, 2), torch.float32, False)
    assert "H1=300" in glue.refuse(*too_wide[:-1]) and "256" in glue.refuse(*too_wide[:-1])


def test_chunked_forward_launches_match(on_emulation):
    """A grid past CUDA's limit runs in several launches (and the projection kernel loops
    over node groups): forced with a tiny max_grid."""
    shape = (40, 6, 3, 2, 8, 200, 3)                    # H2P 256: 8 receivers per block
    *tensors, mask = _sample(shape, torch.float32, True)
    want = glue.forward(*tensors, mask)
    cfg = glue.launch_config(*tensors[:3], tensors[4], tensors[6])
    assert cfg["fwd"]["blocks"] == 30 and cfg["proj"]["blocks"] == 4
    x, e, w1, b1, w2, b2, w3, b3 = tensors
    out = torch.full_like(want, float("nan"))
    recv, send = x.new_empty(240, cfg["H1P"]), x.new_empty(240, cfg["H1P"])
    on_emulation.mpnn_message_sum_forward(
        0, x.data_ptr(), e.data_ptr(), w1.data_ptr(), b1.data_ptr(), w2.data_ptr(), b2.data_ptr(), w3.data_ptr(),
        b3.data_ptr(), mask.data_ptr(), out.data_ptr(), recv.data_ptr(), send.data_ptr(), *shape,
        132, 232448, 233472, 0, max_grid=3)
    small = on_emulation.mpnn_message_sum_launch_config(*shape, 0, max_grid=3)
    assert small["fwd"]["launches"] == 10 and small["proj"]["blocks"] == 3
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_backward_is_deterministic(on_emulation):
    *tensors, mask = _sample((2, 20, 3, 2, 40, 33, 4), torch.float32, True)
    grad = torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(3))
    a = glue.backward(grad, *tensors, mask)
    b = glue.backward(grad, *tensors, mask)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_empty_batch(on_emulation):
    *tensors, mask = _sample((0, 3, 2, 2, 4, 4, 2), torch.float32, False)
    assert glue.forward(*tensors, mask).shape == (0, 3, 2)
    grads = glue.backward(torch.zeros(0, 3, 2), *tensors, mask)
    assert [g.shape for g in grads] == [t.shape for t in tensors]
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
