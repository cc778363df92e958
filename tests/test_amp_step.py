"""amp_step: every backend that can run here against the explicit-sum oracle of eqs.
(8a)-(8d), plus gradcheck (complex), opcheck, torch.compile, equivariance, edge cases
and bad input."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mimo_fast.ops as ops
from op_checks import check_compile, check_gradcheck, check_grads, check_values
from op_samples import opcheck_samples, amp_oracle, amp_sample, amp_samples, backends_for

OP = "amp_step"
FN = ops.amp_step


def cases(dtypes=(torch.float32, torch.float64)):
    return [pytest.param(s, b, id=f"{s.name}-{b}") for d in dtypes for s in amp_samples(d)
            for b in backends_for(OP, s)]


@pytest.mark.parametrize("sample,backend", cases())
def test_values(sample, backend):
    check_values(FN, amp_oracle, sample, backend)


@pytest.mark.parametrize("sample,backend", cases())
def test_gradients(sample, backend):
    check_grads(FN, amp_oracle, sample, backend)


@pytest.mark.parametrize("sample,backend", cases((torch.float64,)))
def test_gradcheck(sample, backend):
    check_gradcheck(FN, sample, backend)


@pytest.mark.parametrize("sample", opcheck_samples(amp_samples(torch.float64)), ids=repr)
def test_opcheck(sample):
    args = [a.detach().clone().requires_grad_() for a in sample.args]
    torch.library.opcheck(torch.ops.mimo_fast.amp_step.default, (*args, ""))


@pytest.mark.parametrize("sample,backend", [c for c in cases((torch.float32,)) if c.id.startswith("basic")])
def test_compile_fullgraph(sample, backend):
    check_compile(FN, sample, backend)


def test_first_iteration_has_no_onsager_term():
    H, y, x, v, _, V_prev, nv = amp_sample("o", 2, 5, 3, torch.float64).args
    r, Sigma, z, V = FN(H, y, x, v, y, V_prev, nv)
    torch.testing.assert_close(z, torch.einsum("bmn,bn->bm", H, x))


def test_permutation_equivariance():
    """Permuting users permutes r and Sigma; permuting antennas permutes z and V."""
    H, y, x, v, zp, Vp, nv = amp_sample("p", 2, 6, 4, torch.float64).args
    r, Sigma, z, V = FN(H, y, x, v, zp, Vp, nv)
    pu, pa = torch.tensor([2, 0, 3, 1]), torch.tensor([5, 1, 0, 4, 2, 3])
    r2, S2, z2, V2 = FN(H[:, pa][:, :, pu], y[:, pa], x[:, pu], v[:, pu], zp[:, pa], Vp[:, pa], nv)
    torch.testing.assert_close(r2, r[:, pu])
    torch.testing.assert_close(S2, Sigma[:, pu])
    torch.testing.assert_close(z2, z[:, pa])
    torch.testing.assert_close(V2, V[:, pa])


def test_noise_var_as_float_broadcasts():
    H, y, x, v, zp, Vp, _ = amp_sample("f", 3, 4, 2, torch.float32).args
    out_f = FN(H, y, x, v, zp, Vp, 0.25)
    out_t = FN(H, y, x, v, zp, Vp, torch.full((3,), 0.25))
    for a, b in zip(out_f, out_t):
        torch.testing.assert_close(a, b)


def test_very_high_snr_and_zero_variance():
    """noise_var 1e-10 with v = 0 (a converged estimate): finite, and r = x + the
    matched-filter residual exactly as the formula says."""
    s = amp_sample("hs", 2, 8, 4, torch.float64)
    H, y, x, v, zp, Vp, nv = s.args
    args = (H, y, x, torch.zeros_like(v), zp, torch.zeros_like(Vp), torch.full_like(nv, 1e-10))
    for backend in backends_for(OP, s):
        out = FN(*args, backend=backend)
        want = amp_oracle(*args)
        for o, w in zip(out, want):
            assert torch.isfinite(torch.view_as_real(o) if o.is_complex() else o).all()
            torch.testing.assert_close(o, w, rtol=1e-8, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(B=st.integers(1, 3), M=st.integers(1, 9), N=st.integers(1, 7), seed=st.integers(0, 2**16),
       first=st.booleans())
def test_hypothesis_shapes(B, M, N, seed, first):
    s = amp_sample("h", B, M, N, torch.float64, seed=seed, first=first)
    for backend in backends_for(OP, s):
        check_values(FN, amp_oracle, s, backend)


# ------------------------------------------------------------------ bad input
def _args(**over):
    s = amp_sample("bad", 2, 4, 3, torch.float32)
    names = ["H", "y", "x", "v", "z_prev", "V_prev", "noise_var"]
    args = dict(zip(names, s.args))
    args.update(over)
    return [args[n] for n in names]


BAD = [
    ("H-real", dict(H=torch.randn(2, 4, 3)), TypeError, "H must have dtype torch.complex64 or torch.complex128"),
    ("H-2d", dict(H=torch.randn(4, 3, dtype=torch.complex64)), ValueError, "H must be 3-D"),
    ("y-shape", dict(y=torch.randn(2, 5, dtype=torch.complex64)), ValueError, "y must have shape (B, M)"),
    ("x-shape", dict(x=torch.randn(2, 4, dtype=torch.complex64)), ValueError, "x must have shape (B, N)"),
    ("v-complex", dict(v=torch.ones(2, 3, dtype=torch.complex64)), TypeError, "v must have dtype torch.float32"),
    ("y-double", dict(y=torch.randn(2, 4, dtype=torch.complex128)), TypeError, "y must have dtype torch.complex64"),
    ("noise-shape", dict(noise_var=torch.ones(3)), ValueError, "noise_var must have shape (B,)"),
    ("noise-zero", dict(noise_var=torch.tensor([0.1, 0.0])), ValueError, "noise_var must be > 0 everywhere, got 0.0 at index (1,)"),
    ("noise-float-negative", dict(noise_var=-1.0), ValueError, "noise_var must be > 0"),
    ("v-negative", dict(v=torch.tensor([[0.1, -0.1, 0.1], [0.1, 0.1, 0.1]])), ValueError, "v must be >= 0 everywhere"),
    ("Vprev-negative", dict(V_prev=-torch.ones(2, 4)), ValueError, "V_prev must be >= 0 everywhere"),
    ("H-nan", dict(H=torch.full((2, 4, 3), complex(float("nan"), 0), dtype=torch.complex64)), ValueError,
     "H has a non-finite value"),
    ("zprev-device", dict(z_prev=torch.ones(2, 4, dtype=torch.complex64, device="meta")), ValueError, "z_prev is on meta"),
    ("noise-not-tensor", dict(noise_var="0.1"), TypeError, "noise_var must be a torch.Tensor"),
]


@pytest.mark.parametrize("name,over,exc,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, over, exc, msg):
    with pytest.raises(exc) as info:
        FN(*_args(**over))
    assert msg in str(info.value)
    assert "amp_step" in str(info.value)
