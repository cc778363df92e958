"""The one marshaller for native calls (mimo_fast/ops/native.py) and its C++ view
(csrc/common/args.h): Python refuses bad tensors and counts naming the argument, the
compiled modules refuse a block of another layout, and both sides share one dtype table."""
from __future__ import annotations

import struct

import pytest
import torch

from mimo_fast import _ext
from mimo_fast.ops import native
from mimo_fast.ops.cpu import ep_lmmse as cpu_ep

needs_c = pytest.mark.skipif(_ext.C is None, reason=f"no C++ extension: {_ext.C_REASON}")
MODULES = [pytest.param("C", marks=needs_c),
           pytest.param("C_CUDA", marks=pytest.mark.skipif(_ext.C_CUDA is None, reason="_C_cuda not built"))]

SIG = native.Signature("demo", "x y:complex ~v mask:bool? >out >info:int32", "B eps:f")


def _ep_args(B=4, K=3, dtype=torch.float32, screen=True):
    """The cpu forward's arguments (``screen``: its optional screen output, None here)."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(B, K, 2 * K, generator=g, dtype=dtype)
    gram = A @ A.transpose(1, 2) / K
    rhs, lam, gam = (torch.randn(B, K, generator=g, dtype=dtype) for _ in range(3))
    mean, var = torch.empty(B, K, dtype=dtype), torch.empty(B, K, dtype=dtype)
    info = torch.empty(B, dtype=torch.int32)
    return [gram, rhs, lam.abs() + 0.5, gam, mean, var, info] + [None] * screen + [B, K, 1]


def _demo(**over):
    args = dict(x=torch.zeros(2, 3), y=torch.zeros(2, dtype=torch.complex64), v=torch.zeros(4, 5)[:, ::2],
                mask=None, out=torch.zeros(2, 3), info=torch.zeros(2, dtype=torch.int32), B=2, eps=0.5)
    args.update(over)
    return list(args.values())


@pytest.mark.parametrize("module", MODULES)
def test_the_compiled_modules_read_the_same_dtype_table_and_version(module):
    abi = getattr(_ext, module).args_abi()
    assert abi["version"] == native.VERSION and abi["magic"] == native.MAGIC
    assert abi["max_dims"] == native.MAX_DIMS and abi["max_tensors"] == native.MAX_TENSORS
    want = {str(dt).removeprefix("torch."): code for dt, code in native.DTYPE_CODES.items()}
    assert abi["dtypes"] == {**want, "None": native.NONE_CODE}


def test_old_dtype_code_names_follow_the_one_table():
    assert _ext.DTYPE_CODES["float32"] == native.dtype_code(torch.float32) == 0
    assert _ext.DTYPE_CODES["float64"] == native.dtype_code(torch.float64) == 1
    with pytest.raises(TypeError, match="float16"):
        native.dtype_code(torch.float16)


@pytest.mark.parametrize("over,err,match", [
    (dict(x=torch.zeros(2, 3, dtype=torch.float16)), TypeError, "demo: x must have dtype float32 or float64"),
    (dict(out=torch.zeros(2, 3, dtype=torch.float64)), TypeError, "demo: out has dtype torch.float64 but x has"),
    (dict(y=torch.zeros(2, dtype=torch.complex128)), TypeError, "demo: y must have dtype torch.complex64"),
    (dict(info=torch.zeros(2)), TypeError, "demo: info must have dtype torch.int32"),
    (dict(mask=torch.zeros(2, dtype=torch.uint8)), TypeError, "demo: mask must have dtype torch.bool"),
    (dict(x=[1.0, 2.0]), TypeError, "demo: x must be a torch.Tensor, got list"),
    (dict(x=None), TypeError, "demo: x is required"),
    (dict(out=torch.zeros(3, 2).T), ValueError, "demo: output out must be contiguous"),
    (dict(out=torch.zeros(2, 3, device="meta")), ValueError, "demo: out is on meta, this kernel takes cpu"),
    (dict(eps="small"), TypeError, "demo: scalar eps must be a float"),
    (dict(B=2.5), TypeError, "demo: scalar B must be an int64"),
])
def test_python_refuses_naming_the_argument(over, err, match):
    with pytest.raises(err, match=match):
        SIG.pack(*_demo(**over))


def test_python_refuses_a_wrong_count_and_names_the_layout():
    with pytest.raises(TypeError, match=r"demo: expected 6 tensors \(x y v mask out info\) and 2 scalars"):
        SIG.pack(*_demo()[:-1])
    with pytest.raises(TypeError, match=r"ep_lmmse_forward: expected 8 tensors"):
        cpu_ep.FORWARD.call(lambda b: None, *_ep_args()[:-2])


def test_a_cuda_signature_refuses_cpu_tensors_unless_emulating():
    sig = native.Signature("k", "a >b", "n", device="cuda")
    with pytest.raises(ValueError, match="k: a is on cpu, this kernel takes cuda tensors"):
        sig.pack(torch.zeros(2), torch.zeros(2), 2)
    block, _ = sig.pack(torch.zeros(2), torch.zeros(2), 2, device="cpu")
    assert len(block) == 8 * (4 + 2 * 3 + 1)


def test_inputs_are_made_contiguous_and_kept_alive_outputs_are_not():
    x = torch.arange(6.0).reshape(3, 2).T                     # a transposed (non-contiguous) input
    y = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64).conj()   # conj bit: resolved by a copy
    block, keep = SIG.pack(*_demo(x=x, y=y))
    assert len(keep) == 2 and keep[0].is_contiguous() and torch.equal(keep[0], x)
    assert not keep[1].is_conj() and torch.equal(keep[1], y)
    slots = struct.unpack(f"<{len(block) // 8}q", block)
    assert slots[4] == keep[0].data_ptr() and slots[7] == keep[1].data_ptr()


def test_block_layout_of_a_view_and_a_none():
    args = _demo()
    block, keep = SIG.pack(*args)
    assert keep == []
    n = len(block) // 8
    slots = struct.unpack(f"<{n - 1}qd", block)
    assert slots[:4] == (native.MAGIC, SIG.layout_hash, 6, 2)
    x, y, v = args[:3]
    assert slots[4:7] == (x.data_ptr(), 0, 6) and slots[7:10] == (y.data_ptr(), 2, 2)
    assert slots[10:13] == (v.data_ptr(), 0 | 2 << 8, 12)           # float32, 2 dims carried
    assert slots[13:17] == (4, 3, 5, 2)                             # sizes, then strides
    assert slots[17:20] == (0, native.NONE_CODE, 0)                 # mask = None
    assert slots[-2:] == (2, 0.5)


def test_the_fast_path_builds_the_same_block_as_the_checked_one():
    args = _ep_args()
    fast = cpu_ep.FORWARD._fast(*args)
    checked, keep = cpu_ep.FORWARD._pack_checked(tuple(args), None)
    assert fast is not None and fast == checked and keep == []
    args[1] = args[1].T.contiguous().T            # a non-contiguous input: the fast path declines
    assert cpu_ep.FORWARD._fast(*args) is None


def test_too_many_variadic_tensors_are_refused():
    sig = native.Signature("v", ">flags:int32 values*", "kinds")
    ok, _ = sig.pack(torch.zeros(3, dtype=torch.int32), [torch.zeros(2)] * 3, 0)
    assert struct.unpack("<4q", ok[:32])[2] == 4
    with pytest.raises(ValueError, match="v: at most 47 tensors for values"):
        sig.pack(torch.zeros(3, dtype=torch.int32), [torch.zeros(2)] * 48, 0)


# ------------------------------------------------------------------ the C++ side


def _call_cpu(sig, args):
    return sig.call(_ext.C.ep_lmmse_forward, *args)


@needs_c
def test_cpp_reads_a_good_block():
    args = _ep_args()
    _call_cpu(cpu_ep.FORWARD, args)
    from mimo_fast.ops.reference import ep_lmmse as ref
    mean, var, info = ref.forward(*args[:4])
    torch.testing.assert_close(args[4], mean)
    torch.testing.assert_close(args[5], var)
    assert torch.equal(args[6], info)


@needs_c
@pytest.mark.parametrize("tensors,scalars,match", [
    ("gram rhs lam gam >mean >var >inf:int32 >screen:uint8?", "B K nthreads", "built for another layout"),  # renamed
    ("rhs gram lam gam >mean >var >info:int32 >screen:uint8?", "B K nthreads", "built for another layout"),  # order
    ("gram rhs lam gam >mean >var >info:int32 >screen:uint8?", "B K", "the block has 2 scalars"),
    ("gram rhs lam gam >mean >var >info:int32", "B K nthreads", "the block has 7 tensors"),
])
def test_cpp_refuses_a_block_of_another_layout(tensors, scalars, match):
    sig = native.Signature("ep_lmmse_forward", tensors, scalars)
    args = _ep_args()
    if len(tensors.split()) == 7:
        del args[7]
    if len(scalars.split()) == 2:
        del args[-1]
    with pytest.raises(ValueError, match=f"^ep_lmmse_forward: .*{match}"):
        _call_cpu(sig, args)


@pytest.mark.parametrize("module", MODULES)
def test_cpp_refuses_a_block_of_another_version_or_length(module):
    ext = getattr(_ext, module)
    sig = cpu_ep.FORWARD if module == "C" else native.Signature(
        "ep_lmmse_forward", "gram rhs lam gam >mean >var >info:int32",
        "B K stream smem_optin path threads max_blocks emulate", device="cuda")
    args = _ep_args() if module == "C" else _ep_args(screen=False)[:-1] + [0, 232448, 0, 0, 0, 0]
    block, _ = sig.pack(*args, device="cpu")
    newer = struct.pack("<q", native.MAGIC + 1) + block[8:]
    with pytest.raises(ValueError, match="layout version 2, this module reads version 1"):
        ext.ep_lmmse_forward(newer)
    with pytest.raises(ValueError, match="not an argument block"):
        ext.ep_lmmse_forward(b"\0" * len(block))
    with pytest.raises(ValueError, match="slots, its records need"):
        ext.ep_lmmse_forward(block + b"\0" * 8)
    with pytest.raises(ValueError, match="bytes, not a v1 block"):
        ext.ep_lmmse_forward(block[:-3])


@needs_c
def test_cpp_checks_element_counts_and_dtypes_against_its_sizes():
    args = _ep_args(B=4)
    args[-3] = 8                                          # B says 8 matrices, the buffers hold 4
    with pytest.raises(ValueError, match="ep_lmmse_forward: gram has 36 elements, the kernel's sizes need 72"):
        _call_cpu(cpu_ep.FORWARD, args)
    # same names (same layout hash), another dtype for info: the C++ accessor refuses it by name
    sig = native.Signature("ep_lmmse_forward", "gram rhs lam gam >mean >var >info >screen:uint8?", "B K nthreads")
    args = _ep_args()
    args[6] = torch.empty(4)
    with pytest.raises(ValueError, match="ep_lmmse_forward: info has dtype float32, the kernel reads int32"):
        _call_cpu(sig, args)
