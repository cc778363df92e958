"""Backend registry and dispatch (docs/conventions.md, "Backends"): explicit choices fail loudly
with the reason, automatic ones fall back with a one-time warning."""
import warnings

import pytest
import torch

import mimo_fast.ops as ops
from mimo_fast.ops import registry
from mimo_fast.ops.registry import Backend, BackendFallbackWarning, BackendUnavailableError
from op_samples import ep_sample


@pytest.fixture
def args():
    return ep_sample("r", 2, 3, torch.float64).args


@pytest.fixture
def fake_backend(monkeypatch):
    """A high-priority CPU backend that refuses float64, to exercise the fallback."""
    ref = registry.get_backend("reference")
    b = Backend(name="fake", priority=100, devices=("cpu",), dtypes=(torch.float32,))
    b.implement("ep_lmmse", ref.ops["ep_lmmse"].forward, ref.ops["ep_lmmse"].backward)
    monkeypatch.setitem(registry._BACKENDS, "fake", b)
    monkeypatch.setattr(registry, "_WARNED", set())
    return b


def test_every_backend_is_registered_with_a_state():
    names = set(registry.backends())
    assert {"reference", "cpu", "triton", "cuda"} <= names
    ref = registry.get_backend("reference")
    assert ref.unavailable() is None and set(ref.ops) == set(registry.OP_NAMES)


def test_automatic_fallback_warns_once_with_reason(fake_backend, args):
    with pytest.warns(BackendFallbackWarning, match="'fake' does not support torch.float64"):
        ops.ep_lmmse(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        ops.ep_lmmse(*args)  # second call: silent


def test_automatic_choice_prefers_priority(fake_backend, args):
    calls = []
    fwd = fake_backend.ops["ep_lmmse"].forward
    fake_backend.ops["ep_lmmse"].forward = lambda *a: calls.append(1) or fwd(*a)
    ops.ep_lmmse(*(a.float() for a in args))
    assert calls == [1]


def test_explicit_unserveable_backend_raises_with_reason(fake_backend, args):
    with pytest.raises(BackendUnavailableError, match=r"backend 'fake' \(from backend='fake'\) cannot run here: does not support torch.float64"):
        ops.ep_lmmse(*args, backend="fake")


def test_env_var_selects_and_errors_name_it(fake_backend, args, monkeypatch):
    monkeypatch.setenv("MIMO_FAST_BACKEND", "fake")
    with pytest.raises(BackendUnavailableError, match="from MIMO_FAST_BACKEND=fake"):
        ops.ep_lmmse(*args)
    monkeypatch.setenv("MIMO_FAST_BACKEND", "reference")
    mean, _ = ops.ep_lmmse(*args)  # served, no warning
    assert mean.shape == (2, 3)


def test_unknown_backend_lists_names(args):
    with pytest.raises(ValueError, match="unknown backend 'nope'.*reference"):
        ops.ep_lmmse(*args, backend="nope")


def test_backend_argument_type(args):
    with pytest.raises(TypeError, match="backend must be a str"):
        ops.ep_lmmse(*args, backend=3)


def test_cuda_backend_explains_itself_without_gpu(args):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    reason = registry.get_backend("cuda").refusal("ep_lmmse", args, explicit=True)
    assert reason  # missing module, no driver, or no device: never None on a CPU-only box
    with pytest.raises(BackendUnavailableError, match="backend 'cuda'"):
        ops.ep_lmmse(*args, backend="cuda")


def test_triton_on_cpu_needs_interpreter(args, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = registry.get_backend("triton").refusal("ep_lmmse", args, explicit=True)
    assert reason and ("Triton is not installed" in reason or "TRITON_INTERPRET=1" in reason)


def test_mpnn_relu_form_is_a_separately_validated_variant():
    """The automatic choice takes a GPU kernel only for forms validated on a GPU: the
    out_act="relu" form of mpnn_message_sum is listed apart from the plain form."""
    from mimo_fast.ops import backends
    from op_samples import mpnn_sample
    tensors = mpnn_sample("v", 1, 3, 2, 1, 4, 4, 2, torch.float32).args[:8]
    tri = registry.get_backend("triton")
    if tri.unavailable() is not None:
        pytest.skip(f"triton off: {tri.unavailable()}")
    assert "mpnn_message_sum:relu" not in backends.TRITON_GPU_VALIDATED
    why = tri.refusal("mpnn_message_sum", tensors, explicit=False, variant="relu")
    assert "mpnn_message_sum:relu kernel has not yet been validated on a GPU" in why
    plain = tri.refusal("mpnn_message_sum", tensors, explicit=False) or ""
    assert "validated" not in plain


def test_value_checks_can_be_skipped(monkeypatch):
    gram, rhs, lam, gam = ep_sample("s", 1, 2, torch.float64).args
    lam = lam.clone()
    lam[0, 0] = float("nan")
    with pytest.raises(ValueError, match="lam has a non-finite"):
        ops.ep_lmmse(gram, rhs, lam, gam)
    monkeypatch.setenv("MIMO_FAST_SKIP_VALUE_CHECKS", "1")
    mean, _, _ = ops.ep_lmmse_ex(gram, rhs, lam, gam)  # trusted mode: no scan, NaN flows
    assert torch.isnan(mean).any()


def test_kernel_threads_override_and_validation():
    from mimo_fast.ops import kernel_threads, set_kernel_threads
    from mimo_fast.ops.threads import num_threads

    default = num_threads()
    with kernel_threads(3):
        assert num_threads() == 3
        with kernel_threads(1):
            assert num_threads() == 1
        assert num_threads() == 3
    assert num_threads() == default
    with pytest.raises(ValueError, match="positive int"):
        set_kernel_threads(0)


def test_triton_not_chosen_automatically_until_gpu_validated():
    from mimo_fast.ops.backends import TRITON, TRITON_GPU_VALIDATED

    if TRITON.unavailable():
        pytest.skip(TRITON.unavailable())
    fake_cuda_like = (torch.empty(2, 3, 3, device="meta"),)
    for op in registry.OP_NAMES:
        reason = TRITON.refusal(op, fake_cuda_like, explicit=False)
        if op in TRITON_GPU_VALIDATED:
            continue
        assert reason and "not yet been validated on a GPU" in reason


def test_cuda_not_chosen_automatically_until_gpu_validated():
    from mimo_fast.ops.backends import CUDA, CUDA_GPU_VALIDATED

    if CUDA.unavailable():
        pytest.skip(CUDA.unavailable())
    fake = (torch.empty(2, 3, 3, device="meta"),)
    for op in registry.OP_NAMES:
        if op not in CUDA_GPU_VALIDATED:
            assert "not yet been validated on a GPU" in CUDA.refusal(op, fake, explicit=False)


def test_triton_auto_choice_policy_for_wide_mpnn():
    """Measured: Triton's MPNN backward is slower than the reference at H1 x H2 = 128 x 64."""
    from mimo_fast.ops.backends import TRITON_AUTO_MPNN_MAX_H1H2, _triton_auto_refusal

    def args(h1, h2):
        return (torch.empty(1, 2, 3), torch.empty(1, 2, 2, 1), torch.empty(h1, 7), torch.empty(h1),
                torch.empty(h2, h1), torch.empty(h2), torch.empty(4, h2), torch.empty(4))
    assert _triton_auto_refusal("mpnn_message_sum", args(64, 32)) is None
    assert _triton_auto_refusal("mpnn_message_sum", args(16, 8)) is None
    why = _triton_auto_refusal("mpnn_message_sum", args(128, 64))
    assert why and "128 x 64" in why and str(TRITON_AUTO_MPNN_MAX_H1H2) in why
    assert _triton_auto_refusal("ep_lmmse", (torch.empty(2, 64, 64),)) is None


def test_kernel_modules_register_without_importing_backends():
    """No import cycle: the implementation packages find their backend in the registry;
    only the ops package imports mimo_fast.ops.backends (its docstring gives the order)."""
    import ast
    import pathlib

    root = pathlib.Path(registry.__file__).parent
    offenders = []
    for path in sorted(root.glob("*/*.py")) + sorted(root.glob("*.py")):
        if path.name in ("__init__.py", "backends.py") and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if "mimo_fast.ops.backends" in names:
                offenders.append(str(path.relative_to(root)))
    assert offenders == [], f"import mimo_fast.ops.backends (use registry.get_backend(name)): {offenders}"


def test_op_modules_own_their_gpu_limits():
    from mimo_fast.ops import backends

    mpnn = registry.op_limits("mpnn_message_sum")
    assert mpnn.validated("triton") and not mpnn.validated("triton", "relu") and not mpnn.validated("cuda")
    assert backends.TRITON_GPU_VALIDATED == registry.validated_names("triton")
    assert {"ep_lmmse", "amp_step", "mpnn_message_sum"} <= backends.TRITON_GPU_VALIDATED
    import importlib
    opm = importlib.import_module("mimo_fast.ops.mpnn_message_sum")    # the module, not the op
    assert backends.TRITON_AUTO_MPNN_MAX_H1H2 == opm.TRITON_AUTO_MAX_H1H2
    with pytest.raises(ValueError, match="unknown op"):
        registry.declare_limits("no_such_op")
