"""`cpu` backend of ep_lmmse against the reference: values, gradients, failures, the
lane-group remainders (B not a multiple of the lane count: 16/8/4 float lanes with
AVX-512/AVX2/SSE2, half that for double), every ISA path and every K class of the kernel."""
import pytest
import torch

from mimo_fast.ops import kernel_threads
from hypothesis import given, settings, strategies as st

from mimo_fast.ops import NotPositiveDefiniteError, ep_lmmse, ep_lmmse_ex, registry

CPU = registry.get_backend("cpu")
pytestmark = pytest.mark.skipif(CPU.unavailable() is not None, reason=f"cpu backend off: {CPU.unavailable()}")
TOL = {torch.float32: 2e-4, torch.float64: 1e-10}


def make(B, K, dtype, seed=0, cond=None):
    g = torch.Generator().manual_seed(seed)
    Hm = torch.randn(B, 2 * K, K, generator=g, dtype=torch.float64)
    gram = Hm.mT @ Hm / (2 * K)
    if cond is not None:  # eigenvalues spread over [1/cond, 1]
        Q, _ = torch.linalg.qr(torch.randn(B, K, K, generator=g, dtype=torch.float64))
        ev = torch.logspace(0, -torch.log10(torch.tensor(float(cond))).item(), K, dtype=torch.float64)
        gram = Q @ torch.diag_embed(ev.expand(B, K)) @ Q.mT
    else:  # a non-symmetric part (the op reads sym(gram))
        gram = gram + 1e-3 * torch.randn(B, K, K, generator=g, dtype=torch.float64)
    lam = (torch.rand(B, K, generator=g, dtype=torch.float64) + 0.5) * (1e-9 if cond else 1)
    rhs, gam = torch.randn(B, K, generator=g, dtype=torch.float64), torch.randn(B, K, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (gram, rhs, lam, gam)]


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def run(backend, ins, gm, gv):
    ps = [t.clone().requires_grad_() for t in ins]
    mean, var, info = ep_lmmse_ex(*ps, backend=backend)
    ok = info == 0
    ((mean * gm)[ok].sum() + (var * gv)[ok].sum()).backward()
    return [mean, var, info] + [p.grad for p in ps]


def compare(ins, tol, gv_scale=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    gm = torch.randn(ins[1].shape, generator=g, dtype=ins[1].dtype)
    gv = gv_scale * torch.randn(ins[1].shape, generator=g, dtype=ins[1].dtype)
    got, want = run("cpu", ins, gm, gv), run("reference", ins, gm, gv)
    assert torch.equal(got[2], want[2])
    ok = want[2] == 0
    assert ok.any()
    for name, a, b in zip(("mean", "var", "info", "g_gram", "g_rhs", "g_lam", "g_gam"), got, want):
        if name == "info":
            continue
        assert torch.isnan(a[~ok]).all(), name
        assert rel(a[ok], b[ok]) <= tol, (name, rel(a[ok], b[ok]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K", [1, 2, 3, 7, 9, 17, 33, 65])
def test_matches_reference(K, dtype):
    B = 11 if K < 33 else 5  # not a multiple of any lane count
    compare(make(B, K, dtype, seed=K), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k256(dtype):
    compare(make(3, 256, dtype, seed=3), 10 * TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_portable_path(dtype, monkeypatch):
    monkeypatch.setenv("MIMO_FAST_CPU_PORTABLE", "1")
    for B, K in ((1, 1), (3, 5), (7, 18)):
        compare(make(B, K, dtype, seed=B), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("disable", ["", "avx512", "avx512,avx2"], ids=["auto", "avx2", "sse2"])
def test_every_isa_path(disable, dtype, monkeypatch):
    """MIMO_FAST_CPU_DISABLE makes the kernel treat the CPU as lacking an ISA, so the AVX2
    and SSE2 lane widths are covered on an AVX-512 machine (on a CPU without AVX-512 the
    first two cases coincide). Full lane groups plus a remainder: the remainder of B 37 at
    K 33 goes one matrix at a time, the one at K 16 through a part-idle lane group; K 20
    and 7 are not multiples of any lane count (the register transposes' partial blocks);
    K 66 is a full lane group whose factor and inverse end on a partial row block."""
    monkeypatch.setenv("MIMO_FAST_CPU_DISABLE", disable)
    for B, K in ((37, 16), (37, 33), (40, 20), (9, 7), (1, 1), (16, 66)):
        compare(make(B, K, dtype, seed=B + K), TOL[dtype])


def guarded(t):
    """A copy of t that ends exactly where an unreadable page begins, so a load past its last
    element faults (the partial blocks' masked loads must not make one). None where the
    platform cannot protect a page."""
    import ctypes
    import mmap
    import sys
    if not sys.platform.startswith("linux"):
        return None
    nbytes, page = t.numel() * t.element_size(), mmap.PAGESIZE
    pages = -(-nbytes // page)
    mm = mmap.mmap(-1, (pages + 1) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    if ctypes.CDLL(None, use_errno=True).mprotect(ctypes.c_void_p(base + pages * page), page, 0) != 0:
        return None
    g = torch.frombuffer(mm, dtype=t.dtype, count=t.numel(), offset=pages * page - nbytes).view(t.shape)
    g.copy_(t)
    return g


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("disable", ["", "avx512", "avx512,avx2"], ids=["auto", "avx2", "sse2"])
def test_partial_blocks_read_nothing_past_the_inputs(disable, dtype, monkeypatch):
    """Every partial-block width (K 1..17 against 16/8/4 float or 8/4/2 double lanes), with
    each input ending at an unreadable page: values and gradients match the reference, and
    no load strays past an input's last element (it would fault)."""
    monkeypatch.setenv("MIMO_FAST_CPU_DISABLE", disable)
    for K in range(1, 18):
        ins = make(18, K, dtype, seed=K)
        gs = [guarded(t) for t in ins]
        if any(g is None for g in gs):
            pytest.skip("cannot protect a page here")
        gm = torch.randn(ins[1].shape, generator=torch.Generator().manual_seed(K), dtype=dtype)
        got = [g.requires_grad_() for g in gs]
        want = [t.clone().requires_grad_() for t in ins]
        outs = []
        for ps, backend in ((got, "cpu"), (want, "reference")):
            mean, var = ep_lmmse(*ps, backend=backend)
            ((mean * gm).sum() + var.sum()).backward()
            outs.append([mean, var] + [p.grad for p in ps])
        for name, a, b in zip(("mean", "var", "g_gram", "g_rhs", "g_lam", "g_gam"), *outs):
            assert rel(a, b) <= TOL[dtype], (K, name, rel(a, b))


def test_mean_only_gradient_path():
    compare(make(9, 12, torch.float64, seed=4), TOL[torch.float64], gv_scale=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("disable", ["", "avx512", "avx512,avx2"], ids=["auto", "avx2", "sse2"])
def test_not_positive_definite(dtype, disable, monkeypatch):
    """A failed pivot in some lanes of a group, at every lane width (the pivot's all-lanes
    test, lanes.h lane_all, reads 16-, 32- and 64-byte comparisons)."""
    monkeypatch.setenv("MIMO_FAST_CPU_DISABLE", disable)
    gram, rhs, lam, gam = make(13, 6, dtype, seed=5)
    gram[2] = -torch.eye(6, dtype=dtype)              # fails at order 1
    gram[9, 3, 3] = -50.0                             # fails at order 4
    ins = [gram, rhs, lam, gam]
    mean, var, info = ep_lmmse_ex(*ins, backend="cpu")
    assert info.dtype == torch.int32 and info.tolist() == [0, 0, 1] + [0] * 6 + [4] + [0] * 3
    assert torch.isnan(mean[[2, 9]]).all() and torch.isnan(var[[2, 9]]).all()
    assert torch.isfinite(mean[info == 0]).all()
    compare(ins, TOL[dtype])  # good rows match, failed rows NaN (gradients too)
    with pytest.raises(NotPositiveDefiniteError, match="batch index 2") as exc:
        ep_lmmse(*ins, backend="cpu")
    assert exc.value.batch_index == 2 and exc.value.order == 1
    # The kernel's own counts, which the op reads instead of scanning info and the screen.
    from mimo_fast.ops.cpu import ep_lmmse as cpu_ep_lmmse
    *_, flagged, failed = cpu_ep_lmmse.forward(*ins, screen=True)
    assert failed == 2 and flagged is False
    assert cpu_ep_lmmse.forward(*make(13, 6, dtype, seed=5), screen=True)[3:] == (False, 0)


def test_ill_conditioned():
    # cond(A) ~ 1e8 in float64: the answers lose ~8 digits to the conditioning itself.
    compare(make(6, 20, torch.float64, seed=6, cond=1e8), 1e-6)
    compare(make(6, 20, torch.float32, seed=7, cond=1e3), 2e-2)


def test_non_contiguous_inputs():
    gram, rhs, lam, gam = make(10, 9, torch.float64, seed=8)
    ins = [gram.mT.contiguous().mT, rhs.t().contiguous().t(), lam, gam[::1]]
    assert not ins[0].is_contiguous()
    compare(ins, TOL[torch.float64])


def test_gradcheck():
    ins = [t.requires_grad_() for t in make(5, 3, torch.float64, seed=9)]
    assert torch.autograd.gradcheck(lambda *a: ep_lmmse(*a, backend="cpu"), ins)


def test_empty_batch():
    mean, var, info = ep_lmmse_ex(*make(0, 4, torch.float32), backend="cpu")
    assert mean.shape == (0, 4) and info.shape == (0,)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 19), K=st.integers(1, 40), double=st.booleans(), seed=st.integers(0, 2**16))
def test_random_shapes(B, K, double, seed):
    dtype = torch.float64 if double else torch.float32
    compare(make(B, K, dtype, seed=seed), TOL[dtype])


def test_threaded_chunks():
    # Large enough for the OpenMP path (several dynamic chunks, a partial last lane group).
    with kernel_threads(2):  # not torch.set_num_threads: see mimo_fast/ops/threads.py
        compare(make(301, 20, torch.float64, seed=10), TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_matrix_path(dtype):
    # A lane group less than half full at K >= 32 is done one matrix at a time (fwd and bwd).
    for B, K in ((1, 32), (1, 70), (9, 40)):
        compare(make(B, K, dtype, seed=B + K), TOL[dtype])
    gram, rhs, lam, gam = make(9, 40, dtype, seed=11)
    gram[8, 5, 5] = -1e3                              # in the last, single-matrix group
    mean, var, info = ep_lmmse_ex(gram, rhs, lam, gam, backend="cpu")
    assert info.tolist() == [0] * 8 + [6]
    assert torch.isnan(mean[8]).all() and torch.isnan(var[8]).all() and torch.isfinite(mean[:8]).all()
    compare([gram, rhs, lam, gam], TOL[dtype])        # NaN gradients for it, the rest match


def test_opcheck():
    ins = [t.requires_grad_() for t in make(5, 4, torch.float64, seed=12)]
    torch.library.opcheck(torch.ops.mimo_fast.ep_lmmse.default, (*ins, "cpu", True))


@pytest.mark.parametrize("B,K", [(19, 6), (3, 40)], ids=["lanes", "one-at-a-time"])
@pytest.mark.parametrize("name,value", [("gram", float("nan")), ("gram", float("inf")), ("rhs", float("-inf")),
                                        ("gam", float("nan")), ("lam", float("nan")), ("lam", 0.0), ("lam", -1.0)])
def test_value_errors_from_the_kernel_screen(name, value, B, K):
    """The cpu kernel screens its inputs as it reads them and the op then names the bad
    argument and index, as the separate scan did: every argument, NaN, inf and lam <= 0,
    in a lane group and on the one-matrix path."""
    ins = dict(zip(("gram", "rhs", "lam", "gam"), make(B, K, torch.float32, seed=B)))
    flat = ins[name].view(-1)
    flat[flat.numel() - 2] = value                    # in the last matrix: a part-idle group
    match = "non-finite" if value != value or abs(value) == float("inf") else "lam"
    with pytest.raises(ValueError, match=f"ep_lmmse: .*{match}") as exc:
        ep_lmmse(*ins.values(), backend="cpu")
    assert name in str(exc.value)


def test_screen_overflow_is_not_an_error():
    """Finite inputs whose sum overflows flag the screen; the full scan then finds nothing
    and the call goes on (no false error)."""
    gram, rhs, lam, gam = make(5, 8, torch.float32, seed=2)
    gram = gram + 5e37 * torch.eye(8)                 # the diagonal alone sums to 4e38: inf
    lam = lam * 1e37
    from mimo_fast.ops.cpu import ep_lmmse as cpu_ep_lmmse
    assert cpu_ep_lmmse.forward(gram, rhs, lam, gam, screen=True)[3] is True   # flagged
    mean, var = ep_lmmse(gram, rhs, lam, gam, backend="cpu")
    want = ep_lmmse(gram.double(), rhs.double(), lam.double(), gam.double(), backend="reference")
    torch.testing.assert_close(mean.double(), want[0], rtol=1e-3, atol=0)
