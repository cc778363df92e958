"""The CUDA kernels of mpnn_message_sum, run on the CPU.

The .cu sources are compiled as C++ against tests/cuda_emulation/cuda_runtime.h (each block
on 256 threads with real barriers and warp shuffles, shared memory filled with NaN bytes
before every block) into a module with the same functions as ``mimo_fast._C_cuda``. The
real glue (mimo_fast/ops/cuda/mpnn_message_sum.py, the pair kernels) drives it on CPU
tensors under the op module's shared layers (mimo_fast/ops/mpnn_message_sum.py), and
values and gradients of both out_act forms are compared with the reference pair kernels. This checks the kernels' index arithmetic,
barriers, reductions, launch geometry and glue on a machine without a GPU; timing,
occupancy and GPU numerics are for test_mpnn_message_sum_cuda.py on a GPU.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sysconfig
import tempfile
import types

import pytest
import torch

from mimo_fast import _ext
from mimo_fast.ops import native
from mimo_fast.ops.cuda import mpnn_message_sum as glue
from mimo_fast.ops.reference import mpnn_message_sum as ref
from op_checks import assert_close
from op_samples import mpnn_sample

opm = importlib.import_module("mimo_fast.ops.mpnn_message_sum")  # the module, not the function
CUDA_PAIRS = types.SimpleNamespace(forward=glue.forward, backward=glue.backward)
REF_PAIRS = types.SimpleNamespace(forward=ref.forward, backward=ref.backward)
ACTS = ("none", "relu")

ROOT = pathlib.Path(__file__).resolve().parents[1]
EMU = ROOT / "tests" / "cuda_emulation"
CUDA_DIR = ROOT / "csrc/mpnn_message_sum/cuda"
SOURCES = [CUDA_DIR / "mpnn_message_sum.cu", CUDA_DIR / "mpnn_message_sum_backward.cu"]
DEPENDS = SOURCES + sorted(CUDA_DIR.glob("*.cuh")) + [
    ROOT / "csrc/common/cuda/cuda_utils.cuh", ROOT / "csrc/common/args.h", EMU / "cuda_runtime.h", EMU / "module.cpp"]


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
    monkeypatch.setattr(glue, "_launch_context", lambda t: (contextlib.nullcontext(), 0, "cpu"))
    glue.device_limits.cache_clear()
    glue._launch_config.cache_clear()
    new_empty = torch.Tensor.new_empty

    def nan_empty(self, *size, **kw):
        t = new_empty(self, *size, **kw)
        return t.fill_(float("nan")) if t.is_floating_point() else t
    monkeypatch.setattr(torch.Tensor, "new_empty", nan_empty)
    yield emu
    glue.device_limits.cache_clear()
    glue._launch_config.cache_clear()


def _mask(B, N, seed):
    m = torch.rand(B, N, generator=torch.Generator().manual_seed(seed)) > 0.3
    m[0] = False                       # a graph with every node masked
    if B > 1:
        m[1] = True
    return m


# name, (B, N, F, E, H1, H2, Fo), masked: each exercises a path of the kernels (see
# test_cases_cover_every_kernel_variant for the register-block variants and "relu" paths)
CASES = [
    ("basic", (2, 4, 3, 2, 5, 6, 7), False),
    ("masked", (3, 5, 2, 3, 8, 4, 3), True),
    ("N1", (2, 1, 3, 2, 4, 3, 2), True),
    ("N1-nomask", (3, 1, 2, 1, 4, 3, 5), False),
    ("N2", (3, 2, 2, 1, 6, 5, 3), True),
    ("E0", (2, 3, 2, 0, 4, 3, 2), False),
    ("E0-masked", (3, 4, 2, 0, 8, 8, 6), True),
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
    # "relu": Fo past one chunk (W3 restaged per chunk), wide outputs
    ("Fo-chunks", (2, 9, 2, 2, 64, 256, 300), True),
    ("Fo-wide-f64", (1, 6, 2, 2, 16, 64, 200), True),
]

#: the register blocks compiled (mpnn_message_sum.cu launch_fwd, mpnn_message_sum_backward.cu)
FWD_VARIANTS = {(0, 8, 8), (0, 4, 8), (0, 2, 8), (0, 8, 4), (0, 4, 4), (0, 2, 4), (1, 4, 4), (1, 2, 4), (1, 1, 4)}
BWD_VARIANTS = {(0, 1), (0, 2), (0, 4), (0, 8), (1, 1), (1, 2), (1, 4)}
#: float64 with H2P = 256 needs more shared memory than a GPU has: refused (test_refusal)
REFUSED = {("sender-chunks", torch.float64), ("Fo-chunks", torch.float64)}
CODES = {dt: native.dtype_code(dt) for dt in (torch.float32, torch.float64)}


def _sample(shape, dtype, masked, seed=0, noncontig=False):
    B, N = shape[:2]
    return mpnn_sample("emu", *shape, dtype, seed=seed, mask=_mask(B, N, seed) if masked else None,
                       noncontig=noncontig).args


def _config(emu, shape, code, act):
    B, N, F, E, H1, H2, Fo = shape
    return emu.mpnn_message_sum_launch_config(B, N, E, H1, H2, Fo, code, act == "relu")


def _check_op(name, tensors, mask, dtype, act, seed=1):
    """Forward and all eight gradients of the op on the cuda pair kernels against the op on
    the reference pair kernels in float64."""
    wide = [t.double() for t in tensors]
    out = opm.forward(CUDA_PAIRS, *tensors, mask, act)
    assert out.dtype == dtype
    assert_close(out, opm.forward(REF_PAIRS, *wide, mask, act), "cuda", dtype, f"{name} {act}: forward")
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = opm.backward(CUDA_PAIRS, grad.to(dtype), *tensors, mask, act)
    want = opm.backward(REF_PAIRS, grad, *wide, mask, act)
    for what, g, w in zip(("node", "edge", "w1", "b1", "w2", "b2", "w3", "b3"), got, want):
        assert g.shape == w.shape and g.dtype == dtype, what
        assert_close(g, w, "cuda", dtype, f"{name} {act}: gradient of {what}")


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,shape,masked", CASES, ids=[c[0] for c in CASES])
def test_values_and_gradients(on_emulation, name, shape, masked, dtype, act):
    if (name, dtype) in REFUSED:
        pytest.skip("refused by the cuda backend (test_refusal_is_raised_before_any_kernel)")
    *tensors, mask = _sample(shape, dtype, masked)
    _check_op(name, tensors, mask, dtype, act)


@pytest.mark.parametrize("act", ACTS)
def test_noncontiguous_inputs(on_emulation, act):
    """edge arrives as the caller gave it (here strided) and we = w1[:, 2F:] is a view."""
    *tensors, mask = _sample((2, 5, 3, 3, 12, 10, 6), torch.float32, True, noncontig=True)
    assert not tensors[1].is_contiguous() and not tensors[2].is_contiguous()
    _check_op("noncontig", tensors, mask, torch.float32, act)


@pytest.mark.parametrize("act", ACTS)
def test_pair_grads_match_the_reference_field_by_field(on_emulation, act):
    """The PairGrads contract itself: shapes, dtypes, which fields are None, every value."""
    *tensors, mask = _sample((2, 7, 3, 2, 20, 12, 5), torch.float64, True)
    relu = act == "relu"
    recv, send, we = opm._project(tensors[0], tensors[2], tensors[3])
    w2, b2, w3, b3 = tensors[4:]
    B, N = recv.shape[:2]
    g = torch.randn(B, N, w3.shape[0] if relu else w2.shape[0], generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64) * mask[..., None]
    args = (recv, send, tensors[1], we, w2, b2, w3, b3, mask, relu)
    torch.testing.assert_close(glue.forward(*args), ref.forward(*args), rtol=1e-12, atol=1e-12)
    got, want = glue.backward(g, *args), ref.backward(g, *args)
    for field in want._fields:
        a, b = getattr(got, field), getattr(want, field)
        if b is None:
            assert a is None, field
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, field
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=lambda m: f"{field}: {m}")
    assert (got.s is None) == relu and (got.gw3 is None) == (not relu)


def _relu_paths(c):
    """Which code paths of the "relu" kernels a config takes (mirrors the kernels' choices)."""
    f, b = c["fwd"], c["bwd"]
    items = f["RN"] * (f["FC"] // 4)
    P3 = 1
    while 2 * P3 * items <= 256 and 2 * P3 <= f["BJ"]:
        P3 *= 2
    rpp = f["BJ"] // P3
    return {("fwd-chunks", f["FC"] < c["FoP"]), ("fwd-P3", P3 > 1), ("fwd-rows4", rpp % 4 == 0),
            ("bwd-chunks", b["FC"] < c["FoP"]), ("bwd-rows4", (b["BM"] // 4) * (b["FC"] // 4) >= 256),
            ("bwd-S3", b["S3"] > 1)}


def test_cases_cover_every_kernel_variant(emu):
    """Every compiled register block (forward TM x TN per dtype, backward TM per dtype) in
    both out_act forms, both GEMM2 modes and both sides of every "relu" path choice run in
    the value tests above."""
    for act in ACTS:
        fwd, bwd, splits, paths = set(), set(), set(), set()
        for name, shape, _ in CASES:
            for dtype, code in CODES.items():
                c = _config(emu, shape, code, act)
                if (name, dtype) in REFUSED:
                    assert c["refusal"]
                    continue
                assert c["refusal"] == "", (name, dtype, c["refusal"])
                fwd.add((code, c["fwd"]["TM"], c["fwd"]["TN"]))
                bwd.add((code, c["bwd"]["TM"]))
                splits.add(c["bwd"]["S"] > 1)
                if act == "relu":
                    paths |= _relu_paths(c)
        assert fwd == FWD_VARIANTS and bwd == BWD_VARIANTS and splits == {False, True}, (act, fwd, bwd, splits)
        if act == "relu":
            want = {(k, v) for k in ("fwd-chunks", "fwd-P3", "fwd-rows4", "bwd-chunks", "bwd-rows4", "bwd-S3")
                    for v in (False, True)}
            assert paths == want, want - paths


def test_refusal_is_raised_before_any_kernel(on_emulation):
    *tensors, mask = _sample((1, 70, 3, 2, 16, 200, 3), torch.float64, False)
    reason = glue.refuse(*tensors)
    assert reason and "shared memory" in reason and "H2=200" in reason
    for act in ACTS:
        with pytest.raises(ValueError, match="shared memory"):
            opm.forward(CUDA_PAIRS, *tensors, mask, act)
    too_wide = _sample((1, 3, 2, 1, 300, 4, 2), torch.float32, False)
    assert "H1=300" in glue.refuse(*too_wide[:-1]) and "256" in glue.refuse(*too_wide[:-1])
    assert glue.refuse(*_sample((1, 3, 2, 1, 8, 4, 2), torch.float32, False)[:-1]) is None


def test_refusal_names_the_relu_form_when_only_it_does_not_fit(emu):
    """refuse() cannot see out_act: sizes only the "relu" kernels cannot serve are refused,
    saying so."""
    a100 = dict(sm_count=108, smem_block=166912, smem_sm=167936)
    args = (2, 4, 2, 256, 256, 2, 0)
    none = emu.mpnn_message_sum_launch_config(*args, False, **a100)["refusal"]
    relu = emu.mpnn_message_sum_launch_config(*args, True, **a100)["refusal"]
    assert relu and 'out_act="relu"' in relu and "163 KiB" in relu
    assert 'out_act="relu"' not in none


@pytest.mark.parametrize("act", ACTS)
def test_chunked_forward_launches_match(on_emulation, act):
    """A grid past CUDA's limit runs in several launches: forced with a tiny max_grid."""
    shape = (40, 6, 3, 2, 8, 200, 3)                    # H2P 256: 8 receivers per block
    B, N, F, E, H1, H2, Fo = shape
    *tensors, mask = _sample(shape, torch.float32, True)
    relu = act == "relu"
    recv, send, we = opm._project(tensors[0], tensors[2], tensors[3])
    args = (recv, send, tensors[1], we, *tensors[4:], mask, relu)
    want = glue.forward(*args)
    cfg = glue.launch_config(B, N, E, H1, H2, Fo, torch.float32, relu)
    assert cfg["fwd"]["blocks"] == 30
    out = glue.forward(*args, max_grid=3)
    small = on_emulation.mpnn_message_sum_launch_config(B, N, E, H1, H2, Fo, 0, relu, max_grid=3)
    assert small["fwd"]["launches"] == 10
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.parametrize("act", ACTS)
def test_backward_is_deterministic(on_emulation, act):
    *tensors, mask = _sample((2, 20, 3, 2, 40, 33, 4), torch.float32, True)
    grad = torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(3))
    a = opm.backward(CUDA_PAIRS, grad, *tensors, mask, act)
    b = opm.backward(CUDA_PAIRS, grad, *tensors, mask, act)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("act", ACTS)
def test_empty_batch(on_emulation, act):
    *tensors, mask = _sample((0, 3, 2, 2, 4, 4, 2), torch.float32, False)
    relu = act == "relu"
    recv = send = tensors[0].new_zeros(0, 3, 4)   # (the op itself returns before projecting)
    args = (recv, send, tensors[1], tensors[2][:, 4:], *tensors[4:], mask, relu)
    assert glue.forward(*args).shape == ((0, 3, 2) if relu else (0, 3, 4))
    pg = glue.backward(recv.new_zeros(0, 3, 2 if relu else 4), *args)
    want = ref.backward(recv.new_zeros(0, 3, 2 if relu else 4), *args)
    for field in want._fields:
        a, b = getattr(pg, field), getattr(want, field)
        assert (a is None) == (b is None), field
        if b is not None:
            assert a.shape == b.shape and torch.equal(a, torch.zeros_like(a)), field
