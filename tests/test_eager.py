"""The ops' eager path (mimo_fast/ops/eager.py): a no-grad call on plain CPU tensors runs the
custom op's function directly; it must give what the custom op gives, and every watcher
(autograd, compile, modes, vmap, the profiler, tensor subclasses) must still see the op.
Forward-mode AD, which neither path supports, is refused on both."""
from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import mimo_fast.ops as ops
from mimo_fast.ops import eager

import op_samples as S

OPS = {  # name: (public function, module holding the custom op, its attribute, samples)
    "ep_lmmse": (ops.ep_lmmse, "mimo_fast.ops.ep_lmmse", "_op", S._ep_samples),
    "ep_cavity": (S.ep_cavity_fn, "mimo_fast.ops.ep_iteration", "_cavity_op", S._ep_cavity_samples),
    "ep_update": (S.ep_update_fn, "mimo_fast.ops.ep_iteration", "_update_op", S._ep_update_samples),
    "amp_step": (ops.amp_step, "mimo_fast.ops.amp_step", "_op", S._amp_samples),
    "mpnn_message_sum": (ops.mpnn_message_sum, "mimo_fast.ops.mpnn_message_sum", "_op", S._mpnn_samples),
}


def _calls(name, monkeypatch):
    """Count the calls that reach the custom op of ``name``."""
    fn, module, attr, _ = OPS[name]
    mod = sys.modules[module]
    real = getattr(mod, attr)
    count = []

    def counting(*args, **kwargs):
        count.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, attr, counting)
    return fn, count


def _samples(name):
    return OPS[name][3](torch.float64)


def _run(fn, sample):
    return fn(*sample.args, **sample.kwargs)


def _flat(out):
    return [out] if isinstance(out, torch.Tensor) else list(out)


@pytest.mark.parametrize("name", list(OPS))
def test_eager_path_equals_the_custom_op(name, monkeypatch):
    fn = OPS[name][0]
    for sample in _samples(name):
        monkeypatch.setattr(eager, "enabled", True)
        direct = _flat(_run(fn, sample))
        monkeypatch.setattr(eager, "enabled", False)
        via_op = _flat(_run(fn, sample))
        assert len(direct) == len(via_op)
        for a, b in zip(direct, via_op):
            assert a.dtype == b.dtype and a.shape == b.shape and not a.requires_grad
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", list(OPS))
def test_plain_no_grad_call_skips_the_dispatcher(name, monkeypatch):
    fn, count = _calls(name, monkeypatch)
    _run(fn, _samples(name)[0])
    assert count == []


@pytest.mark.parametrize("name", list(OPS))
def test_autograd_goes_through_the_op(name, monkeypatch):
    fn, count = _calls(name, monkeypatch)
    sample = _samples(name)[0]
    args = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in sample.args]
    out = _flat(fn(*args, **sample.kwargs))
    assert count == [1] and out[0].requires_grad
    with torch.no_grad():  # the same inputs without a graph to record take the eager path
        fn(*args, **sample.kwargs)
    assert count == [1]


class _PassMode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class _PassFunctionMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode", [_PassMode, _PassFunctionMode], ids=["dispatch-mode", "function-mode"])
def test_modes_see_the_op(mode, monkeypatch):
    fn, count = _calls("ep_lmmse", monkeypatch)
    with mode():
        fn(*_samples("ep_lmmse")[0].args)
    assert count == [1]


def test_profiler_sees_the_op():
    sample = _samples("ep_lmmse")[0]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        ops.ep_lmmse(*sample.args)
    assert any(e.name == "mimo_fast::ep_lmmse" for e in prof.events())


def test_vmap_is_not_eager():
    gram, rhs, lam, gam = _samples("ep_lmmse")[0].args
    seen = []

    def one(g, r, l, m):  # noqa: E741
        seen.append(eager.direct(g, r, l, m))
        return g.sum()

    torch.vmap(one)(gram, rhs, lam, gam)
    assert seen == [False]


def test_direct_refuses_what_it_cannot_vouch_for(monkeypatch):
    x = torch.zeros(2, 3)
    assert eager.direct(x, None, torch.nn.Parameter(torch.zeros(3), requires_grad=False))
    assert not eager.direct(x, torch.zeros(2, device="meta"))

    class Sub(torch.Tensor):
        pass

    assert not eager.direct(x, x.as_subclass(Sub))
    w = torch.nn.Parameter(torch.zeros(3))
    assert not eager.direct(x, w)
    with torch.no_grad():
        assert eager.direct(x, w)
    monkeypatch.setattr(eager, "enabled", False)
    assert not eager.direct(x)


def test_compile_traces_the_op():
    gram, rhs, lam, gam = _samples("ep_lmmse")[0].args
    want = ops.ep_lmmse(gram, rhs, lam, gam)
    got = torch.compile(ops.ep_lmmse, fullgraph=True, backend="eager")(gram, rhs, lam, gam)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_jit_trace_records_the_op():
    gram, rhs, lam, gam = _samples("ep_lmmse")[0].args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace itself, in torch 2.13
        traced = torch.jit.trace(lambda g, r, l, m: ops.ep_lmmse(g, r, l, m)[0], (gram, rhs, lam, gam),
                                 check_trace=False)
    assert "mimo_fast::ep_lmmse" in str(traced.graph)


def test_errors_are_the_same_on_both_paths(monkeypatch):
    gram, rhs, lam, gam = _samples("ep_lmmse")[0].args
    bad = lam.clone()
    bad[1, 2] = float("nan")
    for on in (True, False):
        monkeypatch.setattr(eager, "enabled", on)
        with pytest.raises(ValueError, match=r"ep_lmmse: lam has a non-finite value \(nan\) at index \(1, 2\)"):
            ops.ep_lmmse(gram, rhs, bad, gam)
        indefinite = gram.clone()
        indefinite[1] = -100 * torch.eye(gram.shape[-1], dtype=gram.dtype)
        with pytest.raises(ops.NotPositiveDefiniteError) as err:
            ops.ep_lmmse(indefinite, rhs, lam, gam)
        assert err.value.batch_index == 1


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch's own dual tensors
@pytest.mark.parametrize("name", list(OPS))
def test_forward_mode_ad_is_refused(name):
    """Without the refusal a dual input came back without a tangent and without an error."""
    import torch.autograd.forward_ad as fwAD

    fn = OPS[name][0]
    sample = _samples(name)[0]
    i = next(k for k, a in enumerate(sample.args) if isinstance(a, torch.Tensor) and a.is_floating_point())
    with fwAD.dual_level():
        args = list(sample.args)
        args[i] = fwAD.make_dual(args[i], torch.ones_like(args[i]))
        with pytest.raises(NotImplementedError, match="forward-mode AD"):
            fn(*args, **sample.kwargs)
        _run(fn, sample)  # plain inputs inside a dual level still run
