"""ep_cavity and ep_update: every backend that can run here against the oracles of
tests/op_samples.py (torch.linalg.inv, torch.softmax), plus gradcheck, opcheck,
torch.compile, the EP rules (unfloored cavity mean, improper-cavity fallback, kept nodes),
the loop form against its steps, and bad input."""
import pytest
import torch

import mimo_fast.ops as ops
from mimo_fast.ops import kernel_threads
from mimo_fast.ops.reference import ep_iteration as ref
from op_checks import check_compile, check_gradcheck, check_grads, check_values
from op_samples import (backends_for, ep_cavity_fn, ep_cavity_oracle, ep_cavity_sample, ep_cavity_samples,
                        ep_update_fn, ep_update_oracle, ep_update_sample, ep_update_samples, opcheck_samples)

OPS = {"ep_cavity": (ep_cavity_fn, ep_cavity_samples, ep_cavity_oracle),
       "ep_update": (ep_update_fn, ep_update_samples, ep_update_oracle)}


def cases(dtypes=(torch.float32, torch.float64)):
    return [pytest.param(op, s, b, id=f"{s.name}-{b}") for op, (_, samples, _) in OPS.items()
            for d in dtypes for s in samples(d) for b in backends_for(op, s)]


@pytest.mark.parametrize("op,sample,backend", cases())
def test_values(op, sample, backend):
    fn, _, oracle = OPS[op]
    check_values(fn, oracle, sample, backend)


@pytest.mark.parametrize("op,sample,backend", cases())
def test_gradients(op, sample, backend):
    fn, _, oracle = OPS[op]
    check_grads(fn, oracle, sample, backend)


@pytest.mark.parametrize("op,sample,backend", cases((torch.float64,)))
def test_gradcheck(op, sample, backend):
    check_gradcheck(OPS[op][0], sample, backend)


def _opcheck_args(sample):
    return [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in sample.args]


@pytest.mark.parametrize("sample", opcheck_samples(ep_cavity_samples(torch.float64)), ids=repr)
def test_opcheck_cavity(sample):
    k = sample.kwargs
    torch.library.opcheck(torch.ops.mimo_fast.ep_cavity.default,
                          (*_opcheck_args(sample), k["updates"], k["damping"], k["v_min"], "", True))


@pytest.mark.parametrize("sample", opcheck_samples(ep_update_samples(torch.float64)), ids=repr)
def test_opcheck_update(sample):
    k = sample.kwargs
    torch.library.opcheck(torch.ops.mimo_fast.ep_update.default,
                          (*_opcheck_args(sample), k["damping"], k["v_min"], ""))


@pytest.mark.parametrize("op,sample,backend",
                         [c for c in cases((torch.float32,)) if "-basic-" in c.id or "-logits-keep-" in c.id])
def test_compile_fullgraph(op, sample, backend):
    check_compile(OPS[op][0], sample, backend)


# ------------------------------------------------------------------ the loop and its steps
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loop_is_its_steps(dtype):
    """ep_cavity(updates=n) == n times (ep_cavity, ep_update with EP's prior), then ep_cavity."""
    s = ep_cavity_sample("loop", 5, 6, 4, 3, dtype, seed=11)
    gram, rhs, lam, gam, levels, log_prior = s.args
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    for backend in backends_for("ep_cavity", s):
        x, v = ops.ep_cavity(gram, rhs, lam, gam, v_min=1e-9, updates=3, levels=levels, log_prior=log_prior,
                             damping=0.7, backend=backend)
        l, g = lam, gam
        for _ in range(3):
            xs, vs = ops.ep_cavity(gram, rhs, l, g, v_min=1e-9, backend=backend)
            l, g = ops.ep_update(xs, vs, l, g, levels, log_prior=log_prior, damping=0.7, v_min=1e-9, backend=backend)
        xs, vs = ops.ep_cavity(gram, rhs, l, g, v_min=1e-9, backend=backend)
        torch.testing.assert_close(x, xs, **tol)
        torch.testing.assert_close(v, vs, **tol)


def test_cpu_results_do_not_depend_on_threads():
    s = ep_cavity_sample("threads", 600, 16, 4, 2, torch.float64, seed=12)
    if "cpu" not in backends_for("ep_cavity", s):
        pytest.skip("no cpu backend here")
    args = [a.detach().clone().requires_grad_() for a in s.args]

    def run(n):
        with kernel_threads(n):
            x, v = ep_cavity_fn(*args, **s.kwargs, backend="cpu")
            grads = torch.autograd.grad((x.square() + v).sum(), args)
        return (x, v, *grads)

    for a, b in zip(run(1), run(2)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("logits", [False, True], ids=["prior", "logits-keep"])
def test_cpu_update_does_not_depend_on_threads(logits):
    """ep_update at a size its kernels split over threads (B K L >= 2^16): 1 and 2 kernel
    threads give the same bits, forward and backward (what training at any thread count
    needs; torch's own thread count is checked end to end in tests/test_train_determinism.py)."""
    s = ep_update_sample("threads", 2048, 8, 4, torch.float32, seed=13, logits=logits, keep=logits)
    if "cpu" not in backends_for("ep_update", s):
        pytest.skip("no cpu backend here")
    args = [a.detach().clone().requires_grad_() if a is not None and a.is_floating_point() else a
            for a in s.args]
    leaves = [a for a in args if a is not None and a.requires_grad]

    def run(n):  # the kernels' threads only: torch.set_num_threads here can deadlock MKL later
        with kernel_threads(n):     # in the suite (mimo_fast/ops/threads.py)
            lam, gam = ep_update_fn(*args, **s.kwargs, backend="cpu")
            grads = torch.autograd.grad((lam.square() + gam).sum(), leaves)
        return (lam, gam, *grads)

    for a, b in zip(run(1), run(2)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_cavity_lane_widths_agree(dtype, monkeypatch):
    """ep_cavity's fused loop with AVX-512 lanes (16 float / 8 double) and with AVX2 lanes
    (MIMO_FAST_CPU_DISABLE=avx512): each lane does the same arithmetic, so the bits agree,
    and both match the reference. B is not a multiple of either width; K 7 ends the factor
    on a partial row block."""
    for B, K in ((37, 16), (21, 7)):
        s = ep_cavity_sample("widths", B, K, 4, 3, dtype, seed=B + K)
        if "cpu" not in backends_for("ep_cavity", s):
            pytest.skip("no cpu backend here")
        outs = []
        for disable in ("", "avx512"):
            monkeypatch.setenv("MIMO_FAST_CPU_DISABLE", disable)
            check_values(ep_cavity_fn, ep_cavity_oracle, s, "cpu")
            outs.append(ep_cavity_fn(*s.args, **s.kwargs, backend="cpu"))
        for a, b in zip(*outs):
            assert torch.equal(a, b)


def test_cpu_portable_path_matches(monkeypatch):
    """MIMO_FAST_CPU_PORTABLE=1: the SSE2 lane kernels (2/4 lanes, other exp rounding)."""
    for op, (fn, samples, oracle) in OPS.items():
        for s in samples(torch.float64)[:3]:
            if "cpu" not in backends_for(op, s):
                pytest.skip("no cpu backend here")
            monkeypatch.setenv("MIMO_FAST_CPU_PORTABLE", "1")
            check_values(fn, oracle, s, "cpu")
            check_grads(fn, oracle, s, "cpu")
            monkeypatch.delenv("MIMO_FAST_CPU_PORTABLE")


# ------------------------------------------------------------------ EP's rules
def test_cavity_mean_uses_the_unfloored_variance():
    """Where Sigma / (1 - Sigma lam) is below v_min only the variance is floored: the mean
    stays (mu - Sigma gam) / (1 - Sigma lam) (flooring first scaled it by v_min / v)."""
    mu = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    Sigma = torch.tensor([[2e-7, 0.1]], dtype=torch.float64)
    lam = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    gam = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    x, v = ref.cavity(mu, Sigma, lam, gam, 5e-7)
    den = 1 - Sigma * lam
    torch.testing.assert_close(x, (mu - Sigma * gam) / den)
    assert float(v[0, 0]) == 5e-7 and float(v[0, 1]) == pytest.approx(0.1 / 0.8)


def test_improper_cavity_falls_back_to_the_lmmse_posterior():
    mu = torch.tensor([[0.3, -0.7, 0.2]], dtype=torch.float64)
    Sigma = torch.tensor([[0.5, 0.6, 0.25]], dtype=torch.float64)
    lam = torch.tensor([[2.0, 2.0, 2.0]], dtype=torch.float64)           # 1 - Sigma lam: 0, < 0, > 0
    gam = torch.tensor([[0.5, -1.0, 0.1]], dtype=torch.float64)
    x, v = ref.cavity(mu, Sigma, lam, gam, 1e-9)
    assert x[0, :2].tolist() == mu[0, :2].tolist() and v[0, :2].tolist() == Sigma[0, :2].tolist()
    # the gradient there is that of (x, v) = (mu, Sigma); the cpu and triton pieces agree
    g_x, g_v = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64), torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    want = ref.cavity_backward(g_x, g_v, mu, Sigma, lam, gam, 1e-9)
    assert want[0][0, :2].tolist() == [1.0, 2.0] and want[1][0, :2].tolist() == [0.5, -1.0]
    assert want[2][0, :2].tolist() == [0.0, 0.0] and want[3][0, :2].tolist() == [0.0, 0.0]
    auto = [a.detach().clone().requires_grad_() for a in (mu, Sigma, lam, gam)]
    xa, va = ref.cavity(*auto, 1e-9)
    got = torch.autograd.grad((xa * g_x + va * g_v).sum(), auto)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    from mimo_fast import _ext
    if _ext.C is not None:
        from mimo_fast.ops.cpu import ep_iteration as cpu
        out = [torch.empty_like(mu) for _ in range(4)]
        cpu.CAVITY_BACKWARD.call(_ext.C.ep_cavity_backward_local, g_x, g_v, mu, Sigma, lam, gam, *out, 3, 1e-9)
        for a, b in zip(out, want):
            torch.testing.assert_close(a, b)


def test_kept_nodes_keep_lam_and_gam_exactly():
    s = ep_update_sample("keep", 4, 6, 4, torch.float64, seed=13, logits=True, keep=True)
    x, v, lam, gam, levels, _, logits, keep = s.args
    for backend in backends_for("ep_update", s):
        lam1, gam1 = ops.ep_update(x, v, lam, gam, levels, logits=logits, keep=keep, damping=0.6, v_min=1e-9,
                                   backend=backend)
        assert torch.equal(lam1[keep], lam[keep]) and torch.equal(gam1[keep], gam[keep])
        assert not torch.equal(lam1[~keep], lam[~keep])


def test_negative_precision_keeps_previous_pair():
    """A bimodal posterior sharper than the cavity: v_hat > v_obs makes lam' < 0, so (9) is skipped."""
    levels = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    x, v = torch.tensor([[0.0]], dtype=torch.float64), torch.tensor([[0.5]], dtype=torch.float64)
    lam, gam = torch.tensor([[1.5]], dtype=torch.float64), torch.tensor([[0.2]], dtype=torch.float64)
    s = ep_update_sample("neg", 1, 1, 2, torch.float64)
    for backend in backends_for("ep_update", s):
        l1, g1 = ops.ep_update(x, v, lam, gam, levels, log_prior=torch.zeros(1, 2, dtype=torch.float64),
                               damping=0.3, v_min=1e-9, backend=backend)
        torch.testing.assert_close(l1, lam)
        torch.testing.assert_close(g1, gam)


def test_extreme_exponents_match_softmax():
    """Logits spanning hundreds of nats: the clamped lane exp agrees with torch.softmax."""
    s = ep_update_sample("wide-range", 3, 4, 8, torch.float64, seed=14, logits=True, logit_scale=150.0)
    for backend in backends_for("ep_update", s):
        check_values(ep_update_fn, ep_update_oracle, s, backend)


def test_wide_alphabet():
    """L = 70 (a complex readout over 70 points): Triton's tile then holds fewer nodes."""
    s = ep_update_sample("wide-alphabet", 3, 4, 70, torch.float64, seed=16, logits=True, keep=True)
    for backend in backends_for("ep_update", s):
        check_values(ep_update_fn, ep_update_oracle, s, backend)
        check_grads(ep_update_fn, ep_update_oracle, s, backend)


def test_not_positive_definite_names_batch_index():
    for updates in (0, 2):
        s = ep_cavity_sample("npd", 4, 3, 2, updates, torch.float64, seed=15)
        gram, rhs, lam, gam, levels, log_prior = (a.clone() for a in s.args)
        gram[2] = -5 * torch.eye(3, dtype=torch.float64)
        for backend in backends_for("ep_cavity", s):
            with pytest.raises(ops.NotPositiveDefiniteError, match="batch index 2") as info:
                ops.ep_cavity(gram, rhs, lam, gam, v_min=1e-9, updates=updates, levels=levels,
                              log_prior=log_prior, damping=0.5, backend=backend)
            assert info.value.batch_index == 2 and info.value.order == 1


# ------------------------------------------------------------------ bad input
def _cavity_args(**over):
    s = ep_cavity_sample("bad", 2, 3, 4, 1, torch.float32)
    args = dict(zip(["gram", "rhs", "lam", "gam", "levels", "log_prior"], s.args), **s.kwargs)
    args.update(over)
    return args


def _call_cavity(a):
    return ops.ep_cavity(a["gram"], a["rhs"], a["lam"], a["gam"], v_min=a["v_min"], updates=a["updates"],
                         levels=a["levels"], log_prior=a["log_prior"], damping=a["damping"])


BAD_CAVITY = [
    ("gram-2d", dict(gram=torch.eye(3)), ValueError, "gram must be 3-D"),
    ("rhs-shape", dict(rhs=torch.randn(2, 4)), ValueError, "rhs must have shape (B, K)"),
    ("lam-dtype", dict(lam=torch.ones(2, 3, dtype=torch.float64)), TypeError, "lam has dtype torch.float64"),
    ("lam-zero", dict(lam=torch.tensor([[1.0, 0.0, 1.0], [1, 1, 1]])), ValueError, "lam must be > 0 everywhere"),
    ("gam-nan", dict(gam=torch.full((2, 3), float("nan"))), ValueError, "gam has a non-finite value"),
    ("levels-shape", dict(levels=torch.ones(4, 4)), ValueError, "levels must have shape (K, L)"),
    ("levels-L0", dict(levels=torch.ones(3, 0), log_prior=torch.ones(3, 0)), ValueError, "at least one level"),
    ("log_prior-shape", dict(log_prior=torch.ones(3, 2)), ValueError, "log_prior must have shape (K, L)"),
    ("prior-half", dict(log_prior=None), ValueError, "levels and log_prior go together"),
    ("updates-without-prior", dict(levels=None, log_prior=None), ValueError, "needs the prior"),
    ("updates-negative", dict(updates=-1), ValueError, "updates must be an int >= 0"),
    ("damping-1", dict(damping=1.0), ValueError, "damping must be a float in [0, 1)"),
    ("v_min-0", dict(v_min=0.0), ValueError, "v_min must be a finite float > 0"),
    ("gram-list", dict(gram=[[1.0]]), TypeError, "gram must be a torch.Tensor"),
]


@pytest.mark.parametrize("name,over,exc,msg", BAD_CAVITY, ids=[b[0] for b in BAD_CAVITY])
def test_bad_input_cavity(name, over, exc, msg):
    with pytest.raises(exc) as info:
        _call_cavity(_cavity_args(**over))
    assert msg in str(info.value) and "ep_cavity" in str(info.value)


def _update_args(**over):
    s = ep_update_sample("bad", 2, 3, 4, torch.float32, logits=True, keep=True)
    args = dict(zip(["x_obs", "v_obs", "lam", "gam", "levels", "log_prior", "logits", "keep"], s.args), **s.kwargs)
    args.update(over)
    return args


BAD_UPDATE = [
    ("x-3d", dict(x_obs=torch.ones(2, 3, 1)), ValueError, "x_obs must be 2-D"),
    ("v-zero", dict(v_obs=torch.zeros(2, 3)), ValueError, "v_obs must be > 0 everywhere"),
    ("gam-dtype", dict(gam=torch.ones(2, 3, dtype=torch.float64)), TypeError, "gam has dtype torch.float64"),
    ("both", dict(log_prior=torch.zeros(3, 4)), ValueError, "exactly one of log_prior"),
    ("neither", dict(logits=None), ValueError, "exactly one of log_prior"),
    ("logits-shape", dict(logits=torch.zeros(2, 3, 5)), ValueError, "logits must have shape (B, K, L)"),
    ("logits-inf", dict(logits=torch.full((2, 3, 4), float("inf"))), ValueError, "logits has a non-finite value"),
    ("keep-float", dict(keep=torch.zeros(2, 3)), TypeError, "keep must be a bool tensor"),
    ("keep-shape", dict(keep=torch.zeros(3, 2, dtype=torch.bool)), ValueError, "keep must have shape (B, K)"),
    ("levels-K", dict(levels=torch.zeros(2, 4)), ValueError, "levels must have shape (K, L)"),
    ("damping", dict(damping=-0.1), ValueError, "damping must be a float in [0, 1)"),
]


@pytest.mark.parametrize("name,over,exc,msg", BAD_UPDATE, ids=[b[0] for b in BAD_UPDATE])
def test_bad_input_update(name, over, exc, msg):
    a = _update_args(**over)
    with pytest.raises(exc) as info:
        ops.ep_update(a["x_obs"], a["v_obs"], a["lam"], a["gam"], a["levels"], log_prior=a["log_prior"],
                      logits=a["logits"], keep=a["keep"], damping=a["damping"], v_min=a["v_min"])
    assert msg in str(info.value) and "ep_update" in str(info.value)
