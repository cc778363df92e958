"""Multi-cell coordinated beamforming (P2): rates, per-BS power, WMMSE, Model-GNN PE property."""
import pytest
import torch

from mimo_fast.precode import classical, metrics
from mimo_fast.precode.multicell import (ModelGNNMC, draw_channels_mc, own_channels, per_cell, rates_mc,
                                         sum_se_mc, wmmse_mc)
from mimo_fast.precode.wmmse import wmmse


def chans(b, m, n, k, seed=0, dtype=torch.complex128):
    return draw_channels_mc(b, m, n, k, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_one_cell_is_the_single_cell_problem():
    G = chans(4, 1, 6, 3)
    H = G[:, 0, :, 0, :]
    V = classical.rzf(H, 0.2)
    assert torch.allclose(rates_mc(G, V[:, None], 0.2)[:, 0], metrics.rates(H, V, 0.2))
    Vm, _ = wmmse_mc(G, 0.2)
    Vs, _ = wmmse(H, 0.2)
    assert torch.allclose(Vm[:, 0], Vs, atol=1e-8)


def test_rates_count_inter_cell_interference():
    G = chans(2, 2, 3, 2, seed=1)
    V = per_cell(classical.mrt, G)
    E = torch.einsum("binmk,binj->bmkij", G.conj(), V)
    b, m, k = 1, 1, 0
    sig = E[b, m, k, m, k].abs() ** 2
    itf = E[b, m, k].abs().square().sum() - sig
    assert torch.isclose(rates_mc(G, V, 0.5)[b, m, k], torch.log2(1 + sig / (itf + 0.5)))


def test_wmmse_mc_beats_uncoordinated_rzf_and_meets_each_power_budget():
    G, nv = chans(8, 2, 4, 2, seed=2), 0.1
    V, info = wmmse_mc(G, nv, p_max=2.0)
    p = V.abs().square().sum((-2, -1))
    assert bool((p <= 2.0 * (1 + 1e-9)).all()) and bool((p > 1.9).all())
    assert bool(info.converged.all())
    rzf = per_cell(classical.rzf, G, nv, p_max=2.0)
    assert float(sum_se_mc(G, V, nv).mean()) > float(sum_se_mc(G, rzf, nv).mean())


def test_model_gnn_mc_is_equivariant_and_normalised_per_bs():
    torch.manual_seed(0)
    model = ModelGNNMC(widths=(6, 4)).double()
    G = chans(2, 3, 4, 2, seed=3)
    pc, pa, pu = torch.randperm(3), torch.randperm(4), torch.randperm(2)
    Gp = G[:, pc][:, :, pa][:, :, :, pc][:, :, :, :, pu]
    with torch.no_grad():
        V, Vp = model(G, 2.0), model(Gp)
    assert torch.allclose(Vp * 2 ** 0.5, V[:, pc][:, :, pa][:, :, :, pu], atol=1e-10)
    assert torch.allclose(V.abs().square().sum((-2, -1)), torch.full((2, 3), 2.0, dtype=torch.float64))
    assert own_channels(G).shape == (2, 3, 4, 2)
    with pytest.raises(ValueError, match="G must"):
        model(G[:, :, :, :2])


def test_multicell_train_and_precode_commands(tmp_path):
    import json

    from mimo_fast import cli
    from mimo_fast.precode import weights
    out = tmp_path / "mc"
    assert cli.main(["train", "model-gnn", "--cells", "2", "--n", "3", "--k", "2", "--samples", "16", "--epochs",
                     "1", "--batch", "8", "--widths", "4", "--out", str(out), "--no-progress"]) == 0
    model = weights.load(out / "best.safetensors")
    assert model.name == "model-gnn-mc" and model.meta["cells"] == 2
    js = tmp_path / "mc.json"
    assert cli.main(["precode", "--cells", "2", "--n", "3", "--k", "2", "--snr", "10", "--samples", "4", "--method",
                     "model-gnn", "wmmse", "rzf", "--weights", str(out / "best.safetensors"), "--json", str(js)]) == 0
    rows = {r["method"]: r for r in json.loads(js.read_text())["results"]}
    assert rows["wmmse"]["se_ratio_wmmse"] == pytest.approx(1.0) and rows["model-gnn"]["cells"] == 2
    assert rows["model-gnn"]["power_max"] == pytest.approx(1.0, rel=1e-4)


def test_inter_cell_gain_scales_only_the_inter_cell_links():
    g = lambda: torch.Generator().manual_seed(4)
    G1 = draw_channels_mc(400, 3, 4, 2, generator=g())
    G = draw_channels_mc(400, 3, 4, 2, generator=g(), inter_gain=0.1)
    own = torch.eye(3, dtype=torch.bool).view(1, 3, 1, 3, 1).expand(G.shape)
    assert torch.equal(G[own], G1[own]) and torch.allclose(G[~own], G1[~own] * 0.1 ** 0.5)
    assert abs(float(G[~own].abs().square().mean()) - 0.1) < 0.01
    with pytest.raises(ValueError, match="inter_gain"):
        draw_channels_mc(2, 2, 2, 2, generator=g(), inter_gain=0.0)


def test_coordinated_rzf_is_rzf_for_one_cell_and_meets_the_per_bs_power():
    from mimo_fast.precode.multicell import coordinated_rzf
    nv = metrics.noise_var(10)
    G1 = draw_channels_mc(5, 1, 6, 3, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(coordinated_rzf(G1, nv)[:, 0], classical.rzf(G1[:, 0, :, 0], nv), atol=1e-5)
    G = draw_channels_mc(5, 3, 6, 2, generator=torch.Generator().manual_seed(3))
    V = coordinated_rzf(G, nv)
    assert V.shape == (5, 3, 6, 2) and torch.allclose(V.abs().square().sum((-2, -1)), torch.ones(5, 3), rtol=1e-5)
