"""EE problem P3: ZF-Dinkelbach baseline, constraint-satisfaction ratio, Lagrangian training of
the EE Model-GNN (eta_K), and `mimo-fast precode/train --objective ee`."""
import json
import math

import pytest
import torch

from mimo_fast import cli
from mimo_fast.precode import classical, energy, metrics, weights
from mimo_fast.precode.model_gnn import ModelGNNEE
from mimo_fast.precode.train import PrecodeTrainConfig, draw_set, train

NV = metrics.noise_var(10)
TINY = dict(model="model-gnn", objective="ee", n=4, k=2, snr_db=10.0, samples=64, batch=16, lr=0.02,
            widths=[4, 4], val_samples=16, seed=3, r_min=2.0)


def channels(b, n, k, seed=0):
    return metrics.draw_channels(b, n, k, generator=torch.Generator().manual_seed(seed))


def test_constraint_satisfaction_counts_users_over_samples():
    R = torch.tensor([[3.0, 2.9, 5.0], [1.0, 3.0, 3.1]])
    assert metrics.constraint_satisfaction(R, 3.0) == pytest.approx(4 / 6)
    assert metrics.constraint_satisfaction(R, 0.5) == 1.0 and metrics.constraint_satisfaction(R, 6) == 0.0
    # orthogonal users, power p_k on user k: R_k = log2(1 + p_k |h|^2 / sigma^2), known exactly
    H = torch.eye(3, dtype=torch.complex64).unsqueeze(0)
    V = torch.diag(torch.tensor([1.0, 3.0, 7.0])).to(torch.complex64).sqrt().unsqueeze(0)
    R = metrics.rates(H, V, 1.0)
    assert torch.allclose(R, torch.tensor([[1.0, 2.0, 3.0]]))
    assert metrics.constraint_satisfaction(R, 2.0) == pytest.approx(2 / 3)


@pytest.mark.parametrize("n, k, r_min", [(8, 4, 3.0), (8, 4, 9.0), (6, 6, 1.0)])
def test_dinkelbach_ee_never_decreases_and_meets_every_constraint(n, k, r_min):
    H = channels(50, n, k)
    V, info = energy.zf_dinkelbach(H, NV, r_min, record_history=True)
    hist = torch.stack(info.history)
    assert (hist.diff(dim=0) >= -1e-12 * hist[1:]).all()                    # monotone, per sample
    assert bool(info.converged.all()) and info.iterations < 100
    assert torch.allclose(hist[-1].float(), metrics.ee(H, V, NV), rtol=1e-5)
    assert metrics.constraint_satisfaction(metrics.rates(H, V, NV), r_min) == 1.0


def test_dinkelbach_beats_every_scaled_equal_power_zf_that_meets_the_constraints():
    H, r_min = channels(40, 8, 4, seed=1), 3.0
    V, _ = energy.zf_dinkelbach(H, NV, r_min)
    best = metrics.ee(H, V, NV)
    for p in (0.5, 1, 2, 5, 10, 14, 20, 40, 80, 200):
        Vz = classical.zf(H, p_max=p)
        ok = (metrics.rates(H, Vz, NV) >= r_min).all(-1)
        assert (best[ok] >= metrics.ee(H, Vz, NV)[ok] * (1 - 1e-5)).all(), p
    # one user: EE(p) = log2(1 + a p) / (p / 0.311 + P_circ) is 1-D; compare with a fine grid
    h = channels(1, 4, 1, seed=2)
    V1, _ = energy.zf_dinkelbach(h, NV, 0.0)
    a = float(h.abs().square().sum()) / NV
    grid = torch.linspace(1e-3, 200, 200001, dtype=torch.float64)
    ee_grid = torch.log2(1 + a * grid) / (grid / metrics.PA_EFFICIENCY + energy.circuit_power(4))
    assert float(metrics.ee(h, V1, NV)) == pytest.approx(float(ee_grid.max()), rel=1e-5)


def test_dinkelbach_errors():
    with pytest.raises(ValueError, match="K <= N"):
        energy.zf_dinkelbach(channels(2, 2, 3), NV, 1.0)
    with pytest.raises(ValueError, match="r_min"):
        energy.zf_dinkelbach(channels(2, 4, 2), NV, -1.0)
    with pytest.raises(ValueError, match="lam"):
        energy.lagrangian(channels(2, 4, 2), channels(2, 4, 2), NV, 1.0, torch.zeros(2, 3))


def test_ee_model_gnn_is_2d_pe_and_eta_depends_on_k():
    torch.manual_seed(0)
    net = ModelGNNEE(widths=[4, 4], pooling="mean", eta_widths=[8])
    H = channels(3, 5, 3)
    pa, pu = torch.randperm(5), torch.randperm(3)
    with torch.no_grad():
        V, Vp = net(H), net(H[:, pa][:, :, pu])
        assert torch.allclose(Vp, V[:, pa][:, :, pu], atol=1e-5)
        assert float(net.eta_k(2)) != pytest.approx(float(net.eta_k(9)))
        assert torch.allclose(net(H), net.raw(H) * net.eta_k(3))            # no power normalisation


def test_tiny_ee_training_raises_the_lagrangian(tmp_path):
    cfg = PrecodeTrainConfig(epochs=15, **TINY)
    torch.manual_seed(3)                                                    # build_model's parameters
    model0 = ModelGNNEE(widths=[4, 4], pooling="mean")
    res = train(cfg, tmp_path / "run", progress=False)
    assert res["epoch"] == 15 and not res["interrupted"]
    last = weights.load(tmp_path / "run" / "last.safetensors", expect="model-gnn-ee")
    lam = torch.load(tmp_path / "run" / "last.state.pt", weights_only=True)["lam"]
    assert lam.shape == (64, 2) and (lam >= 0).all()
    H = torch.stack(draw_set(cfg, 64, 0))                                   # the training set
    with torch.no_grad():
        L0, L1 = (float(energy.lagrangian(H, m(H), NV, 2.0, lam).mean()) for m in (model0, last))
        ee0, ee1 = (float(metrics.ee(H, m(H), NV).mean()) for m in (model0, last))
    assert L1 > L0 + 1.0 and ee1 > ee0, (L0, L1, ee0, ee1)
    lines = [json.loads(x) for x in open(tmp_path / "run" / "log.jsonl")]
    assert {"val_ee_ratio", "val_csr", "lam_mean"} <= set(lines[-1])
    assert last.record["r_min"] == 2.0 and last.record["objective"] == "ee"


def test_dual_step_is_projected_ascent():
    lam = torch.tensor([[0.0, 1.0, 0.2]])
    R = torch.tensor([[1.0, 5.0, 4.0]])
    assert torch.allclose(energy.dual_step(lam, R, 3.0, 0.1), torch.tensor([[0.2, 0.8, 0.1]]))
    assert torch.equal(energy.dual_step(torch.zeros(1, 1), torch.tensor([[9.0]]), 3.0, 0.5), torch.zeros(1, 1))


def test_train_and_precode_ee_commands(tmp_path):
    out = tmp_path / "run"
    rc = cli.main(["train", "model-gnn", "--objective", "ee", "--r-min", "2", "--n", "4", "--k", "2", "--snr", "10",
                   "--samples", "32", "--epochs", "2", "--batch", "16", "--widths", "4", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    w = out / "best.safetensors"
    js = tmp_path / "ee.json"
    rc = cli.main(["precode", "--n", "4", "--k", "2", "--snr", "10", "--samples", "8", "--objective", "ee",
                   "--r-min", "1", "2", "--method", "zf-dinkelbach", "wmmse", "zf", "model-gnn", "--weights", str(w),
                   "--json", str(js)])
    assert rc == 0
    data = json.loads(js.read_text())
    assert data["config"]["objective"] == "ee" and data["config"]["r_min"] == [1.0, 2.0]
    rows = data["results"]
    assert len(rows) == 8 and [r["r_min"] for r in rows] == [1.0] * 4 + [2.0] * 4
    for r in rows:
        assert {"ee", "ee_ratio", "constraint_satisfaction", "se", "se_ratio_wmmse", "seconds"} <= set(r)
        assert r["ee"] > 0 and 0 <= r["constraint_satisfaction"] <= 1 and math.isfinite(r["ee_ratio"])
    ref = [r for r in rows if r["method"] == "zf-dinkelbach"]
    assert all(r["ee_ratio"] == pytest.approx(1.0) and r["constraint_satisfaction"] == 1.0 for r in ref)
    rc = cli.main(["precode", "--n", "4", "--k", "2", "--snr", "10", "--method", "model-gnn", "--weights", str(w)])
    assert rc == 2                                                          # EE weights need --objective ee


def test_ee_training_with_exponential_k_keeps_one_multiplier_per_user(tmp_path):
    cfg = PrecodeTrainConfig(model="model-gnn", objective="ee", r_min=2.0, n=6, k=5, k_dist="exp", k_mean=3.0,
                             samples=60, epochs=2, batch=20, widths=[4], val_samples=10)
    res = train(cfg, tmp_path / "exp", progress=False)
    assert res["epoch"] == 2
    lam = torch.load(tmp_path / "exp" / "last.state.pt", weights_only=True)["lam"]
    ks = [h.shape[-1] for h in draw_set(cfg, 60, 0)]
    assert lam.shape == (60, max(ks)) and len(set(ks)) > 1
    assert all(bool((lam[i, kk:] == 0).all()) for i, kk in enumerate(ks))        # padding never updated
    assert all(bool((lam[i, :kk] > 0).any()) for i, kk in enumerate(ks))         # every sample's users were


def test_ee_resume_restores_the_multipliers_exactly(tmp_path):
    import os
    import signal
    full = train(PrecodeTrainConfig(epochs=3, **TINY), tmp_path / "a", progress=False)
    calls = []

    def stop_after_one(msg):                      # SIGTERM after epoch 1: checkpoint and stop
        calls.append(msg)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    part = train(PrecodeTrainConfig(epochs=3, **TINY), tmp_path / "b", progress=True, log=stop_after_one)
    assert part["interrupted"] and part["epoch"] == 1
    rest = train(PrecodeTrainConfig(epochs=3, **TINY), tmp_path / "b", resume=True, progress=False)
    a, b = (torch.load(tmp_path / d / "last.state.pt", weights_only=True)["lam"] for d in ("a", "b"))
    assert torch.equal(a, b) and rest["val_se_ratio"] == full["val_se_ratio"]
    wa, _ = weights.read(tmp_path / "a" / "last.safetensors")
    wb, _ = weights.read(tmp_path / "b" / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
