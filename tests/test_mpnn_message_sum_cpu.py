"""The ``cpu`` backend of mpnn_message_sum against the ``reference`` backend: values and
gradients for both ``out_act`` forms on odd sizes that hit every SIMD tail (H1, H2, Fo
not a multiple of the vector width, N in 1, 2, 3, 17), masks (including fully masked
batch elements and a single valid node), both dtypes, every code path (auto, and forced
AVX-512, AVX2/FMA and the portable fallback; a path this CPU lacks is skipped with the
reason), both work splits (whole batch elements per unit, and receivers split when the
batch is small), and the backward's determinism (bitwise equal across runs and thread
counts).
"""
from __future__ import annotations

import pytest
import torch

from mimo_fast.ops import kernel_threads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mimo_fast import _ext
from mimo_fast.ops import mpnn_message_sum, registry

CPU = registry.get_backend("cpu")
pytestmark = pytest.mark.skipif(CPU.unavailable() is not None, reason=f"cpu backend off: {CPU.unavailable()}")


def _lacks(isa):
    """Why this CPU cannot run a forced ISA (None when it can)."""
    if isa == "avx2" and not _ext.C.cpu_has_avx2_fma():
        return "CPU lacks AVX2/FMA"
    if isa == "avx512" and not _ext.C.cpu_has_avx512_core():
        return "CPU lacks AVX-512 F/VL/BW/DQ"
    return None


ISAS = [pytest.param(name, marks=pytest.mark.skipif(_lacks(name) is not None, reason=str(_lacks(name))))
        for name in ("auto", "avx512", "avx2", "portable")]


def make(B, N, F, E, H1, H2, Fo, dtype, mask_kind=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype)  # noqa: E731
    args = [r(B, N, F), r(B, N, N, E), r(H1, 2 * F + E, scale=0.5), r(H1, scale=0.2),
            r(H2, H1, scale=0.4), r(H2, scale=0.2), r(Fo, H2, scale=0.5), r(Fo, scale=0.2)]
    mask = None
    if mask_kind is not None:
        mask = torch.rand(B, N, generator=g) > 0.35
        if mask_kind == "rows" and B > 0:
            mask[0] = False                     # a fully masked batch element
            if B > 1 and N > 1:
                mask[-1] = False
                mask[-1, N // 2] = True         # a single valid node: no messages at all
    return args, mask


NAMES = ("node", "edge", "w1", "b1", "w2", "b2", "w3", "b3")


def check(args, mask, dtype, out_act="none"):
    rtol, atol = CPU.tolerance(dtype)
    leaves = [a.clone().requires_grad_() for a in args]
    out = mpnn_message_sum(*leaves, mask, backend="cpu", out_act=out_act)
    rleaves = [a.clone().requires_grad_() for a in args]
    want = mpnn_message_sum(*rleaves, mask, backend="reference", out_act=out_act)
    # atol scaled by the output's size, as for the gradients below: a sum over N senders
    # of H1-wide products rounds at that scale (seen on a 16-thread AVX-512 machine)
    out_scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    torch.testing.assert_close(out, want.detach(), rtol=rtol, atol=atol * out_scale)
    if out.numel() == 0:
        return
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, leaves, grad)
    wants = torch.autograd.grad(want, rleaves, grad)
    for name, a, b in zip(NAMES, got, wants):
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * scale, msg=lambda m: f"grad {name}: {m}")


SHAPES = [  # (B, N, F, E, H1, H2, Fo)
    (2, 1, 3, 2, 5, 3, 2),       # N = 1: no pairs at all
    (3, 2, 2, 1, 13, 7, 3),
    (2, 3, 4, 2, 9, 12, 1),
    (2, 17, 4, 3, 33, 20, 3),    # 3 and 5 vectors per row: every column-block remainder
    (1, 17, 3, 0, 8, 8, 2),      # E = 0, B = 1 (receivers split across threads)
    (5, 6, 2, 2, 1, 1, 1),       # H1 = H2 = 1
    (7, 9, 5, 2, 40, 17, 4),     # whole batch elements per thread in forward
    (2, 6, 3, 2, 24, 16, 19),    # Fo past one vector (relu: 2 column vectors at AVX-512 float32)
    (40, 5, 2, 1, 7, 5, 3),      # B >= 32: backward runs whole batch elements per unit
]
ACTS = ["none", "relu"]


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    if request.param == "auto":
        monkeypatch.delenv("MIMO_FAST_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("MIMO_FAST_CPU_ISA", request.param)
    return request.param


@pytest.mark.parametrize("out_act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_kind", [None, "random", "rows"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(shape, mask_kind, dtype, out_act, isa):
    args, mask = make(*shape, dtype, mask_kind)
    check(args, mask, dtype, out_act)


@pytest.mark.parametrize("out_act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_sizes_of_the_benchmarks(dtype, out_act):
    """H 128/64 and 64/32 (several full register tiles and a partial last tile)."""
    args, mask = make(3, 16, 16, 2, 128, 64, 8, dtype, "random", seed=1)
    check(args, mask, dtype, out_act)
    args, mask = make(2, 29, 6, 2, 64, 32, 5, dtype, None, seed=2)
    check(args, mask, dtype, out_act)


@pytest.mark.parametrize("out_act", ACTS)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts(threads, out_act):
    with kernel_threads(threads):  # not torch.set_num_threads: see mimo_fast/ops/threads.py
        for B in (1, 2, 9):
            args, mask = make(B, 11, 3, 2, 24, 16, 2, torch.float64, "rows", seed=B)
            check(args, mask, torch.float64, out_act)


def _grads(args, mask, out_act, threads):
    leaves = [a.clone().requires_grad_() for a in args]
    with kernel_threads(threads):
        out = mpnn_message_sum(*leaves, mask, backend="cpu", out_act=out_act)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
        return [out.detach(), *torch.autograd.grad(out, leaves, grad)]


@pytest.mark.parametrize("out_act", ACTS)
@pytest.mark.parametrize("B", [1, 3, 64], ids=lambda b: f"B{b}")
def test_backward_is_deterministic(B, out_act):
    """float32 forward and gradients bitwise equal between two runs and between 1 and 2
    threads (B 1 and 3: receivers split across units, sender gradients summed over chunks;
    B 64: whole batch elements per unit, 32 groups of weight-gradient partials)."""
    args, mask = make(B, 13, 4, 2, 40, 24, 5, torch.float32, "random", seed=B)
    one = _grads(args, mask, out_act, 1)
    for other in (_grads(args, mask, out_act, 1), _grads(args, mask, out_act, 2),
                  _grads(args, mask, out_act, 2)):
        for name, a, b in zip(("out",) + NAMES, one, other):
            assert torch.equal(a, b), f"{name} differs"


@pytest.mark.parametrize("out_act", ACTS)
def test_empty_batch(out_act):
    args, mask = make(0, 4, 3, 2, 8, 8, 2, torch.float32, "random")
    out = mpnn_message_sum(*args, mask, backend="cpu", out_act=out_act)
    assert out.shape == (0, 4, 2)
    leaves = [a.clone().requires_grad_() for a in args]
    mpnn_message_sum(*leaves, mask, backend="cpu", out_act=out_act).sum().backward()
    assert all(leaf.grad is not None and leaf.grad.shape == leaf.shape for leaf in leaves)
    assert leaves[2].grad.abs().sum() == 0


@pytest.mark.parametrize("out_act", ACTS)
def test_non_contiguous_inputs(out_act):
    args, mask = make(3, 5, 4, 2, 13, 9, 3, torch.float64, "random")
    node = args[0].transpose(0, 1).contiguous().transpose(0, 1)
    edge = args[1].permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0)
    w1 = args[2].T.contiguous().T
    assert not (node.is_contiguous() or edge.is_contiguous() or w1.is_contiguous())
    check([node, edge, w1, *args[3:]], mask, torch.float64, out_act)


@pytest.mark.parametrize("out_act", ACTS)
def test_gradcheck_float64(out_act):
    args, mask = make(2, 4, 2, 2, 5, 3, 2, torch.float64, "random", seed=3)
    leaves = tuple(a.clone().requires_grad_() for a in args)
    assert torch.autograd.gradcheck(
        lambda *t: mpnn_message_sum(*t, mask, backend="cpu", out_act=out_act), leaves)


def test_automatic_choice_is_cpu():
    args, _ = make(1, 3, 2, 1, 4, 4, 1, torch.float32)
    assert registry.resolve("mpnn_message_sum", "", tuple(args[:2])).name == "cpu"


def test_isa_report_and_bad_env(monkeypatch):
    assert _ext.C.mpnn_message_sum_isa(1) == "portable"
    best = ("avx512" if _ext.C.cpu_has_avx512_core() else
            "avx2" if _ext.C.cpu_has_avx2_fma() else "portable")
    assert _ext.C.mpnn_message_sum_isa(0) == best
    # padding multiple: the vector width in elements (at least 4)
    widths = {"portable": 16, "avx2": 32, "avx512": 64}
    for code, name in ((1, "portable"), (2, "avx2"), (3, "avx512")):
        if _lacks(name) is None:
            assert _ext.C.mpnn_message_sum_pad(0, code) == widths[name] // 4   # float32
            assert _ext.C.mpnn_message_sum_pad(1, code) == max(widths[name] // 8, 4)  # float64
    monkeypatch.setenv("MIMO_FAST_CPU_ISA", "sse9")
    args, _ = make(1, 3, 2, 1, 4, 4, 1, torch.float32)
    with pytest.raises(ValueError, match="MIMO_FAST_CPU_ISA"):
        mpnn_message_sum(*args, backend="cpu")


@pytest.mark.parametrize("name, code", [("avx2", 2), ("avx512", 3)])
def test_forcing_an_isa_the_cpu_lacks_is_an_error(name, code, monkeypatch):
    """A forced ISA this CPU cannot run raises (never a silent fallback to another path).
    MIMO_FAST_CPU_DISABLE makes the op treat the CPU as lacking it, so this runs anywhere."""
    args, _ = make(1, 3, 2, 1, 4, 4, 1, torch.float32)
    monkeypatch.setenv("MIMO_FAST_CPU_DISABLE", name)
    monkeypatch.setenv("MIMO_FAST_CPU_ISA", name)
    with pytest.raises(ValueError, match=f"'{name}' requested but this CPU"):
        _ext.C.mpnn_message_sum_isa(code)
    with pytest.raises(ValueError, match=f"'{name}' requested but this CPU"):
        mpnn_message_sum(*args, backend="cpu")


def test_auto_falls_back_when_avx512_is_missing(monkeypatch):
    """auto = the best available: without AVX-512 it runs avx2 (or portable), correctly."""
    monkeypatch.setenv("MIMO_FAST_CPU_DISABLE", "avx512")
    monkeypatch.delenv("MIMO_FAST_CPU_ISA", raising=False)
    assert _ext.C.mpnn_message_sum_isa(0) == ("avx2" if _ext.C.cpu_has_avx2_fma() else "portable")
    monkeypatch.setenv("MIMO_FAST_CPU_DISABLE", "avx2,avx512")
    assert _ext.C.mpnn_message_sum_isa(0) == "portable"
    args, mask = make(2, 5, 3, 2, 20, 9, 2, torch.float32, "random")
    check(args, mask, torch.float32)
    check(args, mask, torch.float32, "relu")


def test_auto_choice_by_padding():
    """auto keeps avx2 when avx512's wider pad inflates the layers (H 16/8), else avx512;
    a forced ISA is kept whatever the sizes."""
    choose = _ext.C.mpnn_message_sum_choose_isa
    if _lacks("avx512") is None and _lacks("avx2") is None:
        assert choose(0, 0, 128, 64) == 3 and choose(0, 0, 64, 32) == 3
        assert choose(0, 0, 16, 8) == 2
        assert choose(0, 3, 16, 8) == 3 and choose(0, 1, 128, 64) == 1
    else:
        assert choose(0, 0, 128, 64) == choose(0, 0, 16, 8)


def test_unknown_isa_code_is_an_error():
    with pytest.raises(ValueError, match="unknown isa code"):
        _ext.C.mpnn_message_sum_isa(7)
    with pytest.raises(ValueError, match="unknown isa code"):
        _ext.C.mpnn_message_sum_pad(0, 7)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.integers(0, 4), N=st.integers(1, 12), F=st.integers(1, 5), E=st.integers(0, 3),
       H1=st.integers(1, 40), H2=st.integers(1, 24), Fo=st.integers(1, 20),
       masked=st.booleans(), f64=st.booleans(), relu=st.booleans(), seed=st.integers(0, 2**16))
def test_random_shapes(B, N, F, E, H1, H2, Fo, masked, f64, relu, seed):
    dtype = torch.float64 if f64 else torch.float32
    args, mask = make(B, N, F, E, H1, H2, Fo, dtype, "random" if masked else None, seed=seed)
    check(args, mask, dtype, "relu" if relu else "none")
