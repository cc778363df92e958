"""The EP detector's fused C++ iteration (csrc/ep_detector/) against its torch form:
same cavities, same precisions, same decisions."""
import pytest
import torch

from mimo_fast import _ext, comm, detect
from mimo_fast.detect.iterative import EP

pytestmark = pytest.mark.skipif(_ext.C is None, reason=f"no C++ extension: {_ext.C_REASON}")


def _problem(B, nr, nt, order, snr, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = comm.qam(order)
    H = comm.rayleigh(B, nr, nt, g)
    idx = c.random_indices((B, nt), g)
    nv = comm.noise_var_from_snr(snr, nr, nt)
    y = comm.awgn((H @ c.indices_to_points(idx)[..., None])[..., 0], nv, g)
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    return c, H.to(cdt), y.to(cdt), nv


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nr,nt,order,snr", [(8, 8, 16, 20.0), (6, 4, 64, 25.0), (5, 3, 4, 5.0), (4, 1, 256, 30.0)])
def test_fused_iteration_matches_torch(nr, nt, order, snr, dtype, monkeypatch):
    c, H, y, nv = _problem(257, nr, nt, order, snr, dtype)
    det = detect.make("ep", c)
    with torch.no_grad():
        assert det._use_fused(torch.zeros(1, 1, 1, dtype=dtype), torch.zeros(1), torch.zeros(1, 4))
        fused = det(y, H, nv)
        monkeypatch.setattr(EP, "_use_fused", lambda self, *a: False)
        plain = det(y, H, nv)
    agree = float((fused.hard == plain.hard).float().mean())
    if dtype == torch.float64:  # same arithmetic: equal to rounding
        torch.testing.assert_close(fused.logits, plain.logits, rtol=1e-9, atol=1e-8)
        assert agree == 1.0
    else:
        # float32 rounding differences (fused vs separate ops) grow over 10 damped
        # iterations: measured up to 10% on small logits, never a different decision here
        rel = (fused.logits - plain.logits).abs() / (plain.logits.abs() + 1)
        assert float(rel.max()) < 0.2 and agree > 0.999


def test_torch_path_when_autograd_records_or_reference_forced(monkeypatch):
    c, H, y, nv = _problem(4, 4, 4, 16, 15.0, torch.float64)
    det = detect.make("ep", c)
    gram = torch.zeros(1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert not det._use_fused(gram, torch.zeros(2), torch.zeros(2, 4))
    assert not detect.make("ep", c, backend="reference")._use_fused(gram.detach(), torch.zeros(2), torch.zeros(2, 4))
    monkeypatch.setenv("MIMO_FAST_BACKEND", "reference")
    assert not det._use_fused(gram.detach(), torch.zeros(2), torch.zeros(2, 4))


def test_kernels_reject_bad_arguments():
    t = torch.zeros(1, 1)
    p = t.data_ptr()
    with pytest.raises(ValueError, match="at least 1 level"):
        _ext.C.ep_cavity(p, p, p, p, p, p, p, p, 0, 1, 1, 0, 5e-7, 0, 1)
    with pytest.raises(ValueError, match="unsupported dtype"):
        _ext.C.ep_update(p, p, p, p, p, p, 1, 1, 1, 0.7, 5e-7, 7, 1)


def test_real_gram_matches_the_real_equivalent_model():
    from mimo_fast.comm import real_equivalent
    from mimo_fast.detect.iterative import _real_gram

    c, H, y, nv = _problem(5, 6, 4, 16, 10.0, torch.float64)
    s2 = torch.rand(5, dtype=torch.float64) + 0.1
    gram, rhs = _real_gram(H, y, s2)
    Hr, yr = real_equivalent(H, y)
    torch.testing.assert_close(gram, Hr.mT @ Hr / s2[:, None, None])
    torch.testing.assert_close(rhs, (Hr.mT @ yr[..., None])[..., 0] / s2[:, None])
