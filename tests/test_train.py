"""mimo_fast.train and `mimo-fast train`: data generator, loss goes down, exact resume,
checkpoint files and errors, a 2-process torchrun run (gloo)."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from mimo_fast import cli, comm
from mimo_fast.detect import REGISTRY
from mimo_fast.detect.learned import weights
from mimo_fast.train import BatchGenerator, CheckpointError, DataConfig, TrainConfig, Trainer, checkpoint

DATA = DataConfig(nr=4, nt=4, nt_min=2, mod="qam4", snr_min=0.0, snr_max=10.0)
ARGS = ["oampnet2", "--nr", "4", "--nt", "4", "--nt-min", "2", "--mod", "qam4", "--snr-min", "0",
        "--snr-max", "10", "--batch", "32", "--val-every", "4", "--val-batches", "2", "--lr", "0.02",
        "--patience", "0", "--model-option", "layers=2", "--no-progress", "--seed", "5"]


def params(path):
    state, _ = weights.read(path)
    return state


def test_batches_follow_the_config_and_resume_exactly():
    gen = BatchGenerator(DATA, seed=1, rank=0)
    b = gen(400)
    k = b.mask.sum(-1)
    assert int(k.min()) == 2 and int(k.max()) == 4 and b.mask.shape == (400, 4)
    assert bool((b.snr_db >= 0).all() and (b.snr_db <= 10).all())
    # sigma^2 = k Es / (Nr SNR) for the k present users (the SNR of docs/conventions.md)
    expect = k.double() / (4 * 10 ** (b.snr_db.double() / 10))
    assert torch.allclose(b.noise_var.double(), expect, rtol=1e-5)
    assert bool((b.x_idx[~b.mask] == 0).all())
    x = comm.qam(4).indices_to_points(b.x_idx) * b.mask
    noise = b.y - (b.H @ x[..., None])[..., 0]
    ratio = noise.abs().square().mean(-1) / b.noise_var
    assert 0.8 < float(ratio.mean()) < 1.2
    state = gen.state_dict()
    nxt = gen(8)
    gen2 = BatchGenerator(DATA, seed=1, rank=0)
    gen2.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(gen2(8), nxt))
    assert not torch.equal(BatchGenerator(DATA, seed=1, rank=1)(8).H, BatchGenerator(DATA, seed=1)(8).H)
    kron = DataConfig(nr=4, nt=4, channel="kronecker", rho_rx=0.9, rho_tx=(0.5, 0.7))
    assert BatchGenerator(kron, seed=0)(3).H.shape == (3, 4, 4)
    for bad, needle in [(dict(nt_min=5), "nt_min"), (dict(snr_min=11.0), "snr_min"),
                        (dict(channel="x"), "channel"), (dict(rho_rx=0.5), "kronecker")]:
        with pytest.raises(ValueError, match=needle):
            DataConfig(**{**DATA.to_dict(), **bad}).validate()


def test_tiny_training_lowers_the_validation_loss():
    model = REGISTRY["oampnet2"](comm.qam(4), nr=4, nt=4, layers=3)
    trainer = Trainer(model, DATA, TrainConfig(steps=40, batch=64, lr=0.02, val_every=20, seed=3))
    before = trainer.validate()["loss"]
    after = trainer.train()["loss"]
    assert after < 0.95 * before, (before, after)


def test_clip_grad_bounds_the_step_gradient_and_keeps_old_options():
    model = REGISTRY["oampnet2"](comm.qam(4), nr=4, nt=4, layers=3)
    trainer = Trainer(model, DATA, TrainConfig(steps=2, batch=64, lr=0.02, seed=3, clip_grad=1e-4))
    trainer.train_step()
    norm = torch.sqrt(sum(p.grad.double().square().sum() for p in trainer.params))
    assert norm <= 1e-4 * (1 + 1e-5)
    # unclipped, the same first batch has a larger gradient (so the clip did something)
    free = Trainer(REGISTRY["oampnet2"](comm.qam(4), nr=4, nt=4, layers=3), DATA,
                   TrainConfig(steps=2, batch=64, lr=0.02, seed=3))
    free.train_step()
    assert torch.sqrt(sum(p.grad.double().square().sum() for p in free.params)) > 1e-3
    # None is left out of the saved options: checkpoints written before the option resume
    assert "clip_grad" not in TrainConfig().to_dict() and TrainConfig(clip_grad=0.5).to_dict()["clip_grad"] == 0.5
    for bad in (0.0, -1.0, float("inf"), "1", True):
        with pytest.raises(ValueError, match="clip_grad"):
            TrainConfig(clip_grad=bad).validate()


def test_resume_is_bit_identical_and_files_are_complete(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["train", *ARGS, "--steps", "12", "--out", str(a)]) == 0
    assert cli.main(["train", *ARGS, "--steps", "6", "--out", str(b)]) == 0   # stops mid-run
    assert cli.main(["train", *ARGS, "--steps", "12", "--out", str(b), "--resume"]) == 0
    pa, pb = params(a / "last.safetensors"), params(b / "last.safetensors")
    assert pa.keys() == {"gamma", "theta", "phi", "xi"}
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["gamma"], torch.ones(2))                      # it trained
    la = [json.loads(s) for s in (a / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(s) for s in (b / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in la] == [4, 8, 12] == [x["step"] for x in lb]
    assert [(x["loss"], x["lr"], x["val_loss"], x["val_ser"]) for x in la] == \
           [(x["loss"], x["lr"], x["val_loss"], x["val_ser"]) for x in lb]
    state = torch.load(a / "last.state.pt", weights_only=True)
    assert state["step"] == 12 and len(state["ranks"]) == 1
    rec = weights.read(a / "last.safetensors")[1]["record"]
    assert rec["command"].startswith("mimo-fast train oampnet2") and rec["seed"] == 5
    assert rec["steps"] == 12 and rec["wall_clock_s"] > 0 and rec["world_size"] == 1
    assert (a / "best.safetensors").is_file()


def test_interrupted_run_resumes_exactly(tmp_path):
    """SIGINT in the middle of a run: checkpoint at the end of that step, then --resume."""
    cfg = TrainConfig(steps=10, batch=32, lr=0.02, val_every=4, val_batches=1, patience=0, seed=2)

    def trainer(out):
        return Trainer(REGISTRY["oampnet"](comm.qam(4), nr=4, nt=4, layers=2), DATA, cfg, out=out)

    full = trainer(tmp_path / "full")
    full.train()
    cut = trainer(tmp_path / "cut")
    step = cut.train_step

    def interrupt_after_4(stop=False):
        if cut.step == 4:
            signal.raise_signal(signal.SIGINT)
        return step(stop)

    cut.train_step = interrupt_after_4
    cut.train()
    # the signal lands during step 5; step 6 is the first to see it: checkpoint there
    assert cut.interrupted and cut.step == 6 and torch.load(
        tmp_path / "cut" / "last.state.pt", weights_only=True)["step"] == 6
    again = trainer(tmp_path / "cut")
    again.resume()
    again.train()
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), again.model.parameters()))


def test_checkpoint_errors(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", *ARGS, "--steps", "4", "--out", str(out)]) == 0
    assert cli.main(["train", *ARGS, "--steps", "8", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["train", *ARGS, "--steps", "8", "--out", str(out), "--resume", "--lr", "0.1"]) == 2
    assert "lr: 0.02 -> 0.1" in capsys.readouterr().err
    args = [a if a != "layers=2" else "layers=3" for a in ARGS]
    assert cli.main(["train", *args, "--steps", "8", "--out", str(out), "--resume"]) == 2
    assert "options" in capsys.readouterr().err
    assert cli.main(["train", *ARGS, "--steps", "8", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a weights file from another step than the state: interrupted between the two writes
    model = REGISTRY["oampnet2"](comm.qam(4), nr=4, nt=4, layers=2)
    weights.save(model, out / "last.safetensors", {"step": 3})
    with pytest.raises(CheckpointError, match="step 3"):
        checkpoint.load(out, model)
    for bad, needle in [(["--steps", "0"], "steps"), (["--nt-min", "9"], "nt_min"),
                        (["--model-option", "layers=0"], "layers"), (["--model-option", "bogus=1"], "bogus")]:
        assert cli.main(["train", *ARGS, *bad, "--out", str(tmp_path / "x")]) == 2
        assert needle in capsys.readouterr().err


def test_resume_accepts_a_checkpoint_from_before_an_option_existed(tmp_path):
    """A checkpoint whose saved options lack one added later (gepnet's cavity_skip and
    cavity_gate came after the first gepnet runs) was trained at that option's default: it
    resumes; a run that sets the new option away from its default is still refused."""
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    args = ["gepnet", "--nr", "2", "--nt", "2", "--mod", "qam4", "--snr-min", "5", "--snr-max", "10",
            "--batch", "8", "--val-every", "2", "--val-batches", "1", "--no-progress", "--seed", "1",
            "--model-option", "iterations=2", "--model-option", "message_hidden=[8,4]",
            "--model-option", "gru_size=8", "--model-option", "readout_hidden=[8,4]"]
    out = tmp_path / "run"
    assert cli.main(["train", *args, "--steps", "2", "--out", str(out)]) == 0
    path = out / "last.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    cfg = json.loads(meta["mimo_fast.config"])
    assert cfg["cavity_skip"] is False and cfg["cavity_gate"] is False
    del cfg["cavity_skip"], cfg["cavity_gate"]                 # as an older file wrote it
    meta["mimo_fast.config"] = json.dumps(cfg, sort_keys=True)
    save_file(load_file(str(path)), str(path), metadata=meta)
    assert cli.main(["train", *args, "--steps", "4", "--out", str(out), "--resume"]) == 0
    assert torch.load(out / "last.state.pt", weights_only=True)["step"] == 4
    model = REGISTRY["gepnet"](comm.qam(4), nr=2, nt=2, iterations=2, message_hidden=(8, 4), gru_size=8,
                               readout_hidden=(8, 4), cavity_skip=True)
    save_file(load_file(str(path)), str(path), metadata=meta)   # the old-style file again
    with pytest.raises(CheckpointError, match="options"):
        checkpoint.load(out, model)


def test_init_starts_a_new_run_from_a_weights_file(tmp_path, capsys):
    """--init: the new run starts at the file's parameters (its options kept), records where
    they came from, and refuses another model, another constellation, bad shapes and --resume."""
    src = tmp_path / "a" / "last.safetensors"
    assert cli.main(["train", *ARGS, "--steps", "4", "--out", str(tmp_path / "a")]) == 0
    # no --model-option: layers=2 must come from the file; lr 1e-12 keeps the start visible
    base = [x for x in ARGS if x not in ("--model-option", "layers=2")]
    assert cli.main(["train", *base, "--steps", "1", "--lr", "1e-12", "--init", str(src),
                     "--out", str(tmp_path / "b")]) == 0
    start, now = params(src), params(tmp_path / "b" / "last.safetensors")
    assert set(start) == set(now)
    assert all(torch.allclose(start[k], now[k], atol=1e-9) for k in start)
    _, meta = weights.read(tmp_path / "b" / "last.safetensors")
    assert meta["record"]["init"]["path"] == str(src) and meta["record"]["init"]["steps"] == 4
    # a run started from a started run keeps the chain
    assert cli.main(["train", *base, "--steps", "1", "--init", str(tmp_path / "b" / "last.safetensors"),
                     "--out", str(tmp_path / "b2")]) == 0
    _, meta = weights.read(tmp_path / "b2" / "last.safetensors")
    assert meta["record"]["init"]["steps"] == 1 and meta["record"]["init"]["init"]["path"] == str(src)
    qam16 = [x if x != "qam4" else "qam16" for x in base]
    for args, needle in [([*base, "--resume"], "--init starts a new run"),
                         ([*base, "--model-option", "layers=3"], "does not fit"),
                         (["oampnet", *base[1:]], "holds a 'oampnet2' detector, not 'oampnet'"),
                         (qam16, "trained for qam4")]:
        assert cli.main(["train", *args, "--steps", "1", "--init", str(src), "--out", str(tmp_path / "c")]) == 2
        assert needle in capsys.readouterr().err


def test_torchrun_two_processes_average_gradients(tmp_path):
    """2 ranks (gloo), three steps: the parameters equal Adam on the mean of the two ranks'
    gradients, each rank on its own data; the logged loss is the mean over ranks and steps;
    only rank 0 prints and writes."""
    out = tmp_path / "dp"
    steps = ["--steps", "3", "--val-every", "3", "--lr", "0.05"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "mimo_fast.cli", "train", *ARGS, *steps, "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("done: step 3") == 1
    log = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1
    got = params(out / "last.safetensors")
    assert weights.read(out / "last.safetensors")[1]["record"]["world_size"] == 2
    assert len(torch.load(out / "last.state.pt", weights_only=True)["ranks"]) == 2

    model = REGISTRY["oampnet2"](comm.qam(4), nr=4, nt=4, layers=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    gens = [BatchGenerator(DATA, seed=5, rank=rank) for rank in (0, 1)]
    losses = []
    for _ in range(3):
        grads = []
        for gen in gens:
            b = gen(32)
            model.zero_grad()
            loss = model.training_loss(b.y, b.H, b.noise_var, b.x_idx, b.mask)
            loss.backward()
            losses.append(float(loss.detach()))
            grads.append([p.grad.clone() for p in model.parameters()])
        for p, g0, g1 in zip(model.parameters(), *grads):
            p.grad = (g0 + g1) / 2
        opt.step()
    for name, p in model.named_parameters():
        assert torch.allclose(got[name], p.detach(), atol=1e-6), name
    assert log[0]["loss"] == pytest.approx(sum(losses) / 6, rel=1e-6)
