"""`cpu` backend of amp_step against the reference: values and gradients (PyTorch's complex
convention) on sizes that exercise the SIMD tails (2N reals vs 8/4-lane vectors, the
2-vector unroll), conjugate/non-contiguous views, and the portable path."""
import pytest
import torch

from mimo_fast.ops import kernel_threads
from hypothesis import given, settings, strategies as st

from mimo_fast.ops import amp_step, registry

CPU = registry.get_backend("cpu")
pytestmark = pytest.mark.skipif(CPU.unavailable() is not None, reason=f"cpu backend off: {CPU.unavailable()}")
TOL = {torch.complex64: 2e-4, torch.complex128: 1e-10}


def make(B, M, N, dtype, seed=0, first=False):
    g = torch.Generator().manual_seed(seed)
    real = dtype.to_real()
    c = lambda *s: torch.randn(*s, generator=g, dtype=torch.complex128).to(dtype)
    r = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64).to(real)
    H, y, x = c(B, M, N) / M**0.5, c(B, M), c(B, N)
    z_prev = y.clone() if first else c(B, M)
    return [H, y, x, r(B, N), z_prev, r(B, M), r(B) + 0.1]


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def run(backend, ins, gouts):
    ps = [t.clone().requires_grad_() for t in ins]
    outs = amp_step(*ps, backend=backend)
    sum((o * g).real.sum() if o.is_complex() else (o * g).sum() for o, g in zip(outs, gouts)).backward()
    return list(outs) + [p.grad for p in ps]


def compare(ins, tol, seed=1):
    torch.manual_seed(seed)
    B, M, N = ins[0].shape
    gouts = [torch.randn_like(t) for t in (ins[2], ins[3], ins[1], ins[5])]
    names = ("r", "Sigma", "z", "V", "g_H", "g_y", "g_x", "g_v", "g_z_prev", "g_V_prev", "g_noise_var")
    for name, a, b in zip(names, run("cpu", ins, gouts), run("reference", ins, gouts)):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert rel(a, b) <= tol, (name, rel(a, b))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("M,N", [(1, 1), (3, 2), (5, 3), (7, 5), (9, 8), (4, 9), (13, 17), (33, 31), (64, 64), (17, 65)])
def test_matches_reference(M, N, dtype):
    compare(make(3, M, N, dtype, seed=M * 100 + N), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_first_iteration_and_large(dtype):
    compare(make(2, 200, 129, dtype, seed=2, first=True), 5 * TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_portable_path(dtype, monkeypatch):
    monkeypatch.setenv("MIMO_FAST_CPU_PORTABLE", "1")
    for M, N in ((1, 1), (5, 3), (11, 18)):
        compare(make(3, M, N, dtype, seed=M), TOL[dtype])


def test_conjugate_and_non_contiguous_views():
    H, y, x, v, zp, Vp, s2 = make(4, 6, 5, torch.complex128, seed=3)
    Hc = H.conj().mT.contiguous().mT.conj()          # same values, conj bit + transposed strides
    assert Hc.is_conj() and not Hc.is_contiguous()
    ins = [Hc, y.conj().conj(), x[:, :], v.t().contiguous().t(), zp, Vp, s2]
    compare(ins, TOL[torch.complex128])


def test_gradcheck():
    ins = [t.requires_grad_() for t in make(2, 3, 2, torch.complex128, seed=4)]
    assert torch.autograd.gradcheck(lambda *a: amp_step(*a, backend="cpu"), ins)


def test_empty_batch():
    r, Sigma, z, V = amp_step(*make(0, 3, 2, torch.complex64), backend="cpu")
    assert r.shape == (0, 2) and V.shape == (0, 3)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 5), M=st.integers(1, 40), N=st.integers(1, 40), double=st.booleans(),
       seed=st.integers(0, 2**16))
def test_random_shapes(B, M, N, double, seed):
    dtype = torch.complex128 if double else torch.complex64
    compare(make(B, M, N, dtype, seed=seed), TOL[dtype])


def test_threaded_chunks():
    # Large enough for the OpenMP path (B*M*N >= 2^17, several dynamic chunks).
    with kernel_threads(2):  # not torch.set_num_threads: see mimo_fast/ops/threads.py
        compare(make(37, 70, 60, torch.complex128, seed=5), TOL[torch.complex128])


def test_opcheck():
    ins = [t.requires_grad_() for t in make(3, 5, 4, torch.complex128, seed=6)]
    torch.library.opcheck(torch.ops.mimo_fast.amp_step.default, (*ins, "cpu"))
