"""The shipped precoder weights load, say how they were made, and reach the SE they were shipped for."""
import pytest
import torch

from mimo_fast.precode import classical, metrics, weights
from mimo_fast.precode.wmmse import wmmse


@pytest.mark.parametrize("name, n, k, at_least", [("model-gnn", 8, 4, 0.96), ("model-gnn", 32, 16, 0.98),
                                                  ("model-gnn", 64, 16, 0.98), ("vanilla-gnn", 32, 16, 0.38)])
def test_shipped_precoders_reach_their_se_ratio(name, n, k, at_least):
    path = weights.find_shipped(name, n, k, 10)
    model = weights.load(path, expect=name)
    # trained by the CLI, or by the Table II bench (the same loop: precode.train.train)
    assert model.record["command"].startswith(("mimo-fast train " + name, "bench/bench_precode.py"))
    assert model.record["samples"] == 1000
    assert model.meta["n"] == n and model.meta["k"] == k and model.meta["snr_db"] == 10
    H = metrics.draw_channels(40, n, k, generator=torch.Generator().manual_seed(99))
    nv = metrics.noise_var(10)
    se_w = metrics.sum_se(H, wmmse(H, nv)[0], nv)
    with torch.no_grad():
        ratio = metrics.se_ratio(metrics.sum_se(H, model(H), nv), se_w)
    assert ratio >= at_least, ratio
    if name == "vanilla-gnn":   # Proposition 1: the Vanilla-GNN ends up close to MRT at this size
        assert abs(ratio - metrics.se_ratio(metrics.sum_se(H, classical.mrt(H), nv), se_w)) < 0.05


def test_model_gnn_runs_at_other_sizes_with_shipped_weights():
    model = weights.load(weights.find_shipped("model-gnn", 32, 16, 10))
    H = metrics.draw_channels(4, 24, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        V = model(H)
    assert V.shape == (4, 24, 9) and torch.allclose(metrics.transmit_power(V), torch.ones(4), rtol=1e-5)


def test_missing_shipped_weights_list_what_exists():
    with pytest.raises(weights.WeightsError, match="model-gnn_32x16_10db.safetensors"):
        weights.find_shipped("model-gnn", 16, 8, 10)


@pytest.mark.parametrize("k, at_least", [(4, 0.97), (24, 0.90)])
def test_model_gnn_trained_on_exponential_k_generalises(k, at_least):
    """Fig. 6: trained on K ~ round(Exp(4)) at N = 32, tested at K up to 24."""
    model = weights.load(weights.SHIPPED_DIR / "model-gnn_32xexp4_10db.safetensors", expect="model-gnn")
    assert model.meta["k"] == "exp4" and model.record["k_dist"] == "exp"
    H = metrics.draw_channels(40, 32, k, generator=torch.Generator().manual_seed(7))
    nv = metrics.noise_var(10)
    se_w = metrics.sum_se(H, wmmse(H, nv)[0], nv)
    with torch.no_grad():
        assert metrics.se_ratio(metrics.sum_se(H, model(H), nv), se_w) >= at_least


@pytest.mark.parametrize("r_min, ee_at_least, csr_at_least", [(3, 0.95, 0.98), (9, 0.90, 0.85)])
def test_shipped_ee_precoders_reach_their_ee_ratio_and_constraint_satisfaction(r_min, ee_at_least, csr_at_least):
    """Table IV at (8, 4): EE ratio against ZF-Dinkelbach and the constraint-satisfaction ratio."""
    from mimo_fast.precode import energy
    path = weights.find_shipped("model-gnn", 8, 4, 10, r_min=r_min)
    model = weights.load(path, expect="model-gnn-ee")
    assert model.record["r_min"] == r_min and model.record["objective"] == "ee" and model.record["samples"] == 5000
    H = metrics.draw_channels(60, 8, 4, generator=torch.Generator().manual_seed(98))
    nv = metrics.noise_var(10)
    ee_ref = metrics.ee(H, energy.zf_dinkelbach(H, nv, r_min)[0], nv)
    with torch.no_grad():
        V = model(H)
    assert energy.ee_ratio(metrics.ee(H, V, nv), ee_ref) >= ee_at_least
    assert metrics.constraint_satisfaction(metrics.rates(H, V, nv), r_min) >= csr_at_least
