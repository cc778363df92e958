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


def test_precoder_runs_use_the_detectors_run_folder(tmp_path, capsys):
    """Same loop as `mimo-fast train` for detectors: checkpoint format, step in the log and
    the weights' record, progress (bar and epoch lines) on stderr, --resume of a finished run."""
    from mimo_fast.train import checkpoint
    out = tmp_path / "run"
    argv = ["train", "model-gnn", "--n", "4", "--k", "2", "--samples", "32", "--epochs", "2", "--batch", "16",
            "--widths", "4", "--out", str(out)]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "train model-gnn" in err
    state = checkpoint.load_state(out)
    assert state["format"] == checkpoint.FORMAT and state["step"] == 4 and state["lam"] is None
    assert [(x["epoch"], x["step"]) for x in log(out)] == [(1, 2), (2, 4)]
    assert weights.read(out / "last.safetensors")[1]["record"]["step"] == 4
    assert cli.main(argv) == 2 and "already holds a run" in capsys.readouterr().err
    assert cli.main(argv + ["--resume"]) == 0                       # nothing left to do
    assert cli.main(argv + ["--resume", "--lr", "0.5"]) == 2
    assert "lr: 0.001 -> 0.5" in capsys.readouterr().err


def test_a_run_folder_of_the_older_precoder_loop_resumes(tmp_path):
    """Its state counted (epoch, step in epoch), kept the options as a dict and the best
    ratio to maximise; its weights recorded epoch_step only."""
    full = train(PrecodeTrainConfig(epochs=3, **TINY), tmp_path / "full", progress=False)
    old = tmp_path / "old"
    train(PrecodeTrainConfig(epochs=3, **TINY), old, progress=False)
    # rewind to the end of epoch 1 in the older format: keep epoch 1's files, drop the rest
    one = train(PrecodeTrainConfig(epochs=1, **TINY), tmp_path / "one", progress=False)
    st = torch.load(tmp_path / "one" / "last.state.pt", weights_only=True)
    opts = json.loads(st["options"])
    for key in ("objective", "r_min", "dual_lr", "inter_gain"):
        opts.pop(key)                                              # options newer than some old runs
    legacy = {"epoch": 1, "step": 0, "optimizer": st["optimizer"], "best": one["best_val_se_ratio"],
              "elapsed": st["elapsed"], "options": dict(opts, epochs=3), "lam": None}
    torch.save(legacy, old / "last.state.pt")
    model = weights.load(tmp_path / "one" / "last.safetensors")
    weights.save(model, old / "last.safetensors", n=4, k=2, snr_db=10.0, record={"epoch_step": [1, 0]})
    (old / "log.jsonl").write_text((tmp_path / "one" / "log.jsonl").read_text())
    rest = train(PrecodeTrainConfig(epochs=3, **TINY), old, resume=True, progress=False)
    assert rest["epoch"] == 3 and rest["val_se_ratio"] == full["val_se_ratio"]
    a, _ = weights.read(tmp_path / "full" / "last.safetensors")
    b, _ = weights.read(old / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [x["epoch"] for x in log(old)] == [1, 2, 3]
    # a pair from different steps is refused, as for detectors
    weights.save(model, old / "last.safetensors", n=4, k=2, snr_db=10.0, record={"step": 5})
    with pytest.raises(ValueError, match="from step 5"):
        train(PrecodeTrainConfig(epochs=3, **TINY), old, resume=True, progress=False)


def test_a_non_finite_loss_stops_the_run_with_a_clear_error(tmp_path, monkeypatch, capsys):
    from mimo_fast.precode.train import PrecoderTrainer
    monkeypatch.setattr(PrecoderTrainer, "batch_loss", lambda self, idx: torch.tensor(float("nan"), requires_grad=True))
    assert cli.main(["train", "model-gnn", "--n", "4", "--k", "2", "--samples", "16", "--epochs", "1", "--widths", "4",
                     "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "non-finite training loss at step 1" in capsys.readouterr().err
