"""mimo_fast.precode: metrics, MRT/ZF/RZF, WMMSE, Vanilla-GNN and Model-GNN properties."""
import math

import pytest
import torch

from mimo_fast.precode import ModelGNN, VanillaGNN, classical, metrics
from mimo_fast.precode.model_gnn import taylor_term
from mimo_fast.precode.wmmse import wmmse


def channels(b, n, k, seed=0, dtype=torch.complex64):
    return metrics.draw_channels(b, n, k, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_channels_are_unit_variance_and_seeded():
    H = channels(400, 8, 4)
    assert H.shape == (400, 8, 4) and H.dtype == torch.complex64
    assert abs(float(H.abs().square().mean()) - 1.0) < 0.03
    assert torch.equal(H, channels(400, 8, 4))
    with pytest.raises(ValueError, match="k"):
        metrics.draw_channels(2, 4, 0, generator=torch.Generator())


def test_rates_match_the_formula_and_ee_uses_the_power_model():
    H, nv = channels(3, 4, 3, dtype=torch.complex128), 0.3
    V = classical.mrt(H) * 0.7
    R = metrics.rates(H, V, nv)
    b, k = 1, 2
    sig = abs(complex(H[b, :, k].conj() @ V[b, :, k])) ** 2
    itf = sum(abs(complex(H[b, :, k].conj() @ V[b, :, j])) ** 2 for j in range(3) if j != k)
    assert math.isclose(float(R[b, k]), math.log2(1 + sig / (itf + nv)), rel_tol=1e-12)
    p = float(metrics.transmit_power(V)[b])
    assert math.isclose(p, 0.49, rel_tol=1e-12)
    expect = float(R[b].sum()) / (p / 0.311 + 4 * 17.6 + 43.3)
    assert math.isclose(float(metrics.ee(H, V, nv)[b]), expect, rel_tol=1e-12)
    assert metrics.constraint_satisfaction(torch.tensor([[1.0, 3.0], [2.0, 0.5]]), 1.5) == 0.5
    with pytest.raises(ValueError, match="noise_var"):
        metrics.rates(H, V, 0.0)
    with pytest.raises(ValueError, match="V must"):
        metrics.rates(H, V[:, :, :2], 1.0)


@pytest.mark.parametrize("method", ["mrt", "zf", "rzf", "wmmse", "vanilla", "model"])
def test_power_constraint_holds_exactly(method):
    H = channels(5, 6, 3)
    torch.manual_seed(0)
    f = {"mrt": lambda: classical.mrt(H, 2.0), "zf": lambda: classical.zf(H, 2.0),
         "rzf": lambda: classical.rzf(H, 0.1, 2.0), "wmmse": lambda: wmmse(H, 0.1, 2.0)[0],
         "vanilla": lambda: VanillaGNN(widths=(8, 8))(H, 2.0), "model": lambda: ModelGNN(widths=(8, 4))(H, 2.0)}
    with torch.no_grad():
        V = f[method]()
    p = metrics.transmit_power(V.to(torch.complex128))
    assert torch.allclose(p, torch.full_like(p, 2.0), rtol=1e-5), p
    if method in ("mrt", "zf", "rzf"):       # equal power per user
        col = V.abs().square().sum(-2)
        assert torch.allclose(col, torch.full_like(col, 2.0 / 3), rtol=1e-5)


def test_zf_nulls_inter_user_interference():
    H = channels(4, 8, 5, dtype=torch.complex128)
    G = H.mH @ classical.zf(H)
    off = G - torch.diag_embed(torch.diagonal(G, dim1=-2, dim2=-1))
    assert float(off.abs().max()) < 1e-12 and float(torch.diagonal(G, dim1=-2, dim2=-1).abs().min()) > 1e-3
    with pytest.raises(ValueError, match="K <= N"):
        classical.zf(channels(1, 3, 4))


def test_wmmse_increases_the_se_monotonically_and_beats_closed_forms():
    H, nv = channels(16, 8, 4, seed=3), metrics.noise_var(10)
    V, info = wmmse(H, nv, record_history=True, tol=0.0, max_iter=60)
    hist = torch.stack(info.history)               # (iterations + 1, B), starts at RZF
    assert info.iterations == 60 and hist.shape == (61, 16)
    assert bool((hist[1:] - hist[:-1] >= -1e-9 * hist[:-1]).all())
    se = metrics.sum_se(H, V, nv)
    for W in (classical.rzf(H, nv), classical.zf(H), classical.mrt(H)):
        assert float(se.mean()) > float(metrics.sum_se(H, W, nv).mean())
    # the stated rule stops every sample well before the cap, and batching does not change V
    V2, info2 = wmmse(H, nv)
    assert bool(info2.converged.all()) and info2.iterations < 500
    V3, _ = wmmse(H[:5], nv)
    assert torch.allclose(V2[:5], V3, atol=1e-6)
    with pytest.raises(ValueError, match="noise_var"):
        wmmse(H, -1.0)


def test_taylor_term_is_D_HH_D():
    H = channels(2, 5, 3, dtype=torch.complex128)
    D = torch.view_as_real(H).to(torch.float64)
    T = torch.view_as_complex(taylor_term(D, H).contiguous())
    assert torch.allclose(T, H @ H.mH @ H, atol=1e-12)


@pytest.mark.parametrize("cls", [ModelGNN, VanillaGNN])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_gnns_are_permutation_equivariant(cls, pooling):
    torch.manual_seed(1)
    model = cls(widths=(8, 6), pooling=pooling).double()
    H = channels(3, 6, 4, seed=5, dtype=torch.complex128)
    pa, pu = torch.randperm(6), torch.randperm(4)
    with torch.no_grad():
        V = model(H)
        Vp = model(H[:, pa][:, :, pu])
    assert torch.allclose(Vp, V[:, pa][:, :, pu], atol=1e-10)
    assert V.shape == H.shape


def test_gnns_run_at_any_size_and_check_their_input():
    torch.manual_seed(0)
    m = ModelGNN(widths=(4,))
    for n, k in ((1, 1), (3, 7), (16, 2)):
        assert m(channels(2, n, k)).shape == (2, n, k)
    with pytest.raises(ValueError, match="even"):
        ModelGNN(widths=(3,))
    with pytest.raises(ValueError, match="pooling"):
        VanillaGNN(pooling="max")
    with pytest.raises(ValueError, match="complex"):
        m(torch.zeros(2, 3, 4))
