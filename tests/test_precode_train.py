"""Precoder training (`mimo-fast train model-gnn`), resume, weight files and `mimo-fast precode`."""
import json
import os
import signal

import pytest
import torch

from mimo_fast import cli
from mimo_fast.precode import metrics, weights
from mimo_fast.precode.train import PrecodeTrainConfig, draw_set, groups, train

TINY = dict(model="model-gnn", n=4, k=2, snr_db=10.0, samples=64, batch=16, lr=0.02, widths=[4, 4],
            val_samples=16, seed=3)


def log(path):
    return [json.loads(line) for line in open(path / "log.jsonl")]


def test_a_tiny_training_run_raises_the_se(tmp_path):
    cfg = PrecodeTrainConfig(epochs=12, **TINY)
    torch.manual_seed(3)                                           # build_model's initial parameters
    model0 = weights.registry()["model-gnn"](widths=[4, 4], pooling="mean")
    res = train(cfg, tmp_path / "run", progress=False)
    assert not res["interrupted"] and res["epoch"] == 12
    best = weights.load(tmp_path / "run" / "best.safetensors", expect="model-gnn")
    H = metrics.draw_channels(200, 4, 2, generator=torch.Generator().manual_seed(11))
    nv = metrics.noise_var(10)
    with torch.no_grad():
        se0, se1 = (float(metrics.sum_se(H, m(H), nv).mean()) for m in (model0, best))
    assert se1 > se0 + 0.3, (se0, se1)
    lines = log(tmp_path / "run")
    assert [x["epoch"] for x in lines] == list(range(1, 13))
    assert best.record["samples"] == 64 and "wall_seconds" in best.record


def test_resume_continues_exactly(tmp_path):
    full = train(PrecodeTrainConfig(epochs=4, **TINY), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="--resume"):
        train(PrecodeTrainConfig(epochs=4, **TINY), tmp_path / "a", progress=False)
    cfg = PrecodeTrainConfig(epochs=4, **TINY)
    calls = []   # SIGTERM sent from the progress callback after epoch 2: the run checkpoints and stops

    def stop_after_two(msg):
        calls.append(msg)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    part = train(cfg, tmp_path / "b", progress=True, log=stop_after_two)
    assert part["interrupted"] and part["epoch"] == 2
    rest = train(cfg, tmp_path / "b", resume=True, progress=False)
    assert rest["epoch"] == 4
    a, _ = weights.read(tmp_path / "a" / "last.safetensors")
    b, _ = weights.read(tmp_path / "b" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full["val_se_ratio"] == rest["val_se_ratio"]


def test_exponential_k_training_set_mixes_user_counts(tmp_path):
    cfg = PrecodeTrainConfig(n=6, k=5, k_dist="exp", k_mean=3.0, samples=300, epochs=1, batch=32, widths=[4],
                             val_samples=8)
    hs = draw_set(cfg, 300, 0)
    ks = [h.shape[-1] for h in hs]
    assert min(ks) == 2 and max(ks) == 5 and len(set(ks)) == 4 and all(h.shape[0] == 6 for h in hs)
    assert [g.shape[-1] for g in groups(hs)] == [2, 3, 4, 5] and sum(g.shape[0] for g in groups(hs)) == 300
    assert [h.shape for h in draw_set(cfg, 300, 0)] == [h.shape for h in hs]      # seeded
    res = train(cfg, tmp_path / "exp", progress=False)
    assert res["epoch"] == 1 and weights.load(tmp_path / "exp" / "best.safetensors").meta["k"] == "exp3"


def test_train_and_precode_commands(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "model-gnn", "--n", "4", "--k", "2", "--snr", "10", "--samples", "32", "--epochs",
                   "2", "--batch", "16", "--widths", "4", "--lr", "0.02", "--out", str(out), "--no-progress"])
    assert rc == 0
    w = out / "best.safetensors"
    model = weights.load(w)
    assert model.record["command"].startswith("mimo-fast train model-gnn") and model.meta["n"] == 4
    js = tmp_path / "p.json"
    rc = cli.main(["precode", "--n", "4", "--k", "2", "--snr", "10", "--samples", "8", "--method", "mrt", "zf",
                   "rzf", "wmmse", "model-gnn", "--weights", str(w), "--json", str(js)])
    assert rc == 0
    data = json.loads(js.read_text())
    rows = {r["method"]: r for r in data["results"]}
    assert set(rows) == {"mrt", "zf", "rzf", "wmmse", "model-gnn"} and data["config"]["samples"] == 8
    assert rows["wmmse"]["se_ratio_wmmse"] == pytest.approx(1.0)
    for r in rows.values():
        assert r["se"] > 0 and r["seconds"] >= 0 and r["power_max"] == pytest.approx(1.0, rel=1e-4)
        assert set(r) >= {"method", "n", "k", "snr_db", "se", "se_ratio_wmmse", "seconds"}


@pytest.mark.parametrize("argv, message", [
    (["precode", "--n", "4", "--k", "2", "--snr", "10", "--method", "vanilla-gnn", "--objective", "ee"], "not in this"),
    (["precode", "--n", "2", "--k", "3", "--snr", "10", "--method", "mrt", "--objective", "ee"], "--k <= --n"),
    (["precode", "--n", "4", "--k", "2", "--snr", "10", "--method", "zf-dinkelbach"], "--objective ee"),
    (["precode", "--n", "5", "--k", "3", "--snr", "7", "--method", "model-gnn", "--objective", "ee", "--r-min", "4"],
     "--r-min 4"),
    (["precode", "--n", "4", "--k", "2", "--snr", "10", "--method", "vanilla-gnn", "--cells", "2"], "not in this"),
    (["precode", "--n", "4", "--k", "2", "--snr", "10", "--method", "model-gnn", "--cells", "2"], "model-gnn-mc"),
    (["precode", "--n", "5", "--k", "3", "--snr", "7", "--method", "model-gnn"], "no shipped weights"),
    (["precode", "--n", "2", "--k", "3", "--snr", "7", "--method", "zf"], "--k <= --n"),
    (["train", "vanilla-gnn", "--objective", "ee", "--out", "x"], "not in this version"),
    (["train", "model-gnn", "--objective", "ee", "--r-min", "-1", "--out", "x"], "--r-min"),
    (["train", "model-gnn", "--samples", "0", "--out", "x"], "--samples"),
    (["train", "model-gnn", "--init", "shipped", "--out", "x"], "--init apply to the detectors"),
    (["train", "model-gnn", "--clip-grad", "1", "--out", "x"], "--clip-grad apply to the detectors"),
])
def test_clear_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_weights_errors(tmp_path):
    with pytest.raises(weights.WeightsError, match="no such file"):
        weights.load(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(weights.WeightsError, match="not a readable"):
        weights.load(bad)
