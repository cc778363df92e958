"""The published training recipes: per-user-count SNR ranges, the P(k) ∝ k user law, a
fixed training set, weight decay, float64 training and the ``--preset`` defaults."""
from __future__ import annotations

import json
import types

import pytest
import torch

from mimo_fast import cli
from mimo_fast.train import presets
from mimo_fast.train.data import BatchGenerator, DataConfig
from mimo_fast.train.loop import TrainConfig, Trainer


def test_snr_ranges_per_user_count():
    cfg = DataConfig(nr=8, nt=8, nt_min=4, nt_step=4, snr_ranges={4: (8.0, 23.5), 8: (10.0, 30.5)})
    b = BatchGenerator(cfg, seed=1)(4000)
    k = b.mask.sum(1)
    assert set(k.tolist()) == {4, 8}
    for users, (lo, hi) in ((4, (8.0, 23.5)), (8, (10.0, 30.5))):
        s = b.snr_db[k == users]
        assert lo <= float(s.min()) and float(s.max()) <= hi
        assert float(s.min()) < lo + 0.5 and float(s.max()) > hi - 0.5   # the whole range is used
    assert cfg.to_dict()["snr_ranges"] == [[4, 8.0, 23.5], [8, 10.0, 30.5]]


def test_snr_ranges_must_cover_every_user_count():
    with pytest.raises(ValueError, match=r"snr_ranges has no range for user counts \[4\]"):
        DataConfig(nr=8, nt=8, nt_min=4, nt_step=4, snr_ranges={8: (10.0, 30.5)}).validate()
    with pytest.raises(ValueError, match="low <= high"):
        DataConfig(nr=8, nt=8, snr_ranges={8: (30.0, 10.0)}).validate()


def test_proportional_user_law():
    cfg = DataConfig(nr=64, nt=32, nt_min=16, nt_dist="proportional")
    vals, p = cfg.user_counts()
    assert vals.tolist() == list(range(16, 33))
    torch.testing.assert_close(p, vals.double() / vals.sum())
    k = BatchGenerator(cfg, seed=0)(20000).mask.sum(1).double()
    assert abs(float(k.mean()) - float((vals * p).sum())) < 0.1


def test_fixed_training_set_repeats_each_epoch_in_a_new_order():
    cfg = DataConfig(nr=4, nt=2, train_set=10)
    gen = BatchGenerator(cfg, seed=3)
    epoch = lambda: [gen(4) for _ in range(3)]                      # noqa: E731  (4 + 4 + 2 samples)
    first, second = epoch(), epoch()
    assert sorted(b.y.shape[0] for b in first) == [2, 4, 4]
    key = lambda bs: sorted(tuple(b.y[0].real.tolist()) for b in bs)  # noqa: E731
    assert key(first) == key(second)                                 # the same set
    assert [b.y.shape[0] for b in first] != [b.y.shape[0] for b in second] or \
        not all(torch.equal(a.y, b.y) for a, b in zip(first, second))  # reordered
    # resume: the generator's state restores the position in the set
    state = gen.state_dict()
    nxt = gen(4)
    gen2 = BatchGenerator(cfg, seed=3)
    gen2.load_state_dict(state)
    assert torch.equal(gen2(4).y, nxt.y)
    # validation draws stay fresh
    assert BatchGenerator(cfg, seed=3, stream=1).fixed_set is None


def test_train_config_float64_and_weight_decay_options():
    cfg = TrainConfig(dtype="float64", weight_decay=1e-5)
    cfg.validate()
    assert cfg.to_dict()["dtype"] == "float64"
    assert "dtype" not in TrainConfig().to_dict() and "weight_decay" not in TrainConfig().to_dict()
    with pytest.raises(ValueError, match="dtype must be one of"):
        TrainConfig(dtype="float16").validate()
    with pytest.raises(ValueError, match="weight_decay"):
        TrainConfig(weight_decay=-1.0).validate()


def test_preset_defaults_and_explicit_options_win(tmp_path):
    out = tmp_path / "run"
    rc = cli.main(["train", "gnn", "--preset", "published", "--nr", "8", "--nt", "2", "--steps", "2",
                   "--batch", "8", "--train-set", "16", "--val-every", "1", "--val-batches", "1",
                   "--dtype", "float64", "--model-option", "rounds=2", "--out", str(out), "--no-progress",
                   "--backend", "reference"])
    assert rc == 0
    from safetensors import safe_open
    with safe_open(str(out / "last.safetensors"), "pt") as f:
        meta = f.metadata()
        rec, conf = json.loads(meta["mimo_fast.record"]), json.loads(meta["mimo_fast.config"])
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float64
    assert rec["data"]["nr"] == 8 and rec["data"]["snr_min"] == 12.0 and rec["data"]["train_set"] == 16
    assert rec["train"]["lr"] == 1e-4 and rec["train"]["weight_decay"] == 1e-5
    assert conf["rounds"] == 2                                        # --model-option over the preset's 10


def test_preset_errors(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "gnn", "--preset", "nope", "--out", "x"])
    assert "no such preset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "gnn", "--preset", "gepnet-published", "--out", "x"])
    assert "recipe of gepnet, not gnn" in capsys.readouterr().err


def test_every_preset_builds_a_valid_config():
    for p in presets.PRESETS.values():
        a = p.args
        ranges = {k: (lo, hi) for k, lo, hi in a.get("snr_range", [])} or None
        DataConfig(nr=a["nr"], nt=a["nt"], nt_min=a.get("nt_min"), nt_step=a.get("nt_step", 1),
                   nt_dist=a.get("nt_dist", "uniform"), mod=a["mod"], snr_ranges=ranges,
                   train_set=a.get("train_set")).validate()
        TrainConfig(steps=a["steps"], batch=a["batch"], lr=a["lr"], val_every=a["val_every"],
                    patience=a["patience"], weight_decay=a.get("weight_decay", 0.0),
                    lr_factor=a.get("lr_factor", 0.5), plateau_every=a.get("plateau_every", 1),
                    dtype=a.get("dtype", "float32")).validate()


def test_gepnet_preset_follows_the_authors_code():
    """Nt law P(k) ∝ k and ReduceLROnPlateau(0.91, patience 0) stepped every 50 epochs."""
    a = presets.find("published", "gepnet").args
    assert a["nt_dist"] == "proportional" and a["nt_min"] == 4 and a["nt_step"] == 4
    vals, p = DataConfig(nr=8, nt=8, nt_min=4, nt_step=4, nt_dist="proportional").user_counts()
    assert vals.tolist() == [4, 8] and p.tolist() == pytest.approx([1 / 3, 2 / 3])
    assert (a["lr_factor"], a["patience"], a["plateau_every"], a["val_every"]) == (0.91, 0, 50, 781)


def test_plateau_every_steps_the_scheduler_on_every_nth_validation():
    seen = []
    fake = types.SimpleNamespace(val_every=10, cfg=TrainConfig(plateau_every=3),
                                 sched=types.SimpleNamespace(step=seen.append))
    for n in range(1, 11):                      # validations 1..10 at steps 10..100
        fake.step = 10 * n
        Trainer.on_scheduled(fake, float(n))
    assert seen == [1.0, 4.0, 7.0, 10.0]
    assert "plateau_every" not in TrainConfig().to_dict()       # older checkpoints still resume
    assert TrainConfig(plateau_every=50).to_dict()["plateau_every"] == 50
    with pytest.raises(ValueError, match="plateau_every"):
        TrainConfig(plateau_every=0).validate()
