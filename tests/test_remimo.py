"""RE-MIMO (mimo_fast.detect.learned.remimo): permutation equivariance, padded users change
nothing, eq. 11 loss, a tiny training run lowers the loss, the paper's training-distribution
options of mimo_fast.train.data, and the shipped weights load and beat LMMSE."""
import math

import pytest
import torch

from mimo_fast import cli, comm, detect
from mimo_fast.detect.learned import weights
from mimo_fast.detect.learned.remimo import PRESETS, transmitters_encoding
from mimo_fast.train import BatchGenerator, DataConfig, TrainConfig, Trainer
from mimo_fast.train.data import VAL_STREAM, stream_seed

TINY = dict(d_s=16, heads=2, blocks=2, head_dim=8)
#: SNR (dB) where the shipped model is checked against LMMSE, per number of users
SHIPPED_SNR = {16: 11.0, 32: 13.0}


def tiny(grad_feature=True, dtype=torch.float64, nr=8, nt=6, mod="qam4"):
    torch.manual_seed(0)
    det = detect.make("remimo", mod, nr=nr, nt=nt, pretrained=False, grad_feature=grad_feature, **TINY)
    return det.to(dtype).eval()


def system(B=5, nr=8, nt=6, seed=0, mod="qam4"):
    g = torch.Generator().manual_seed(seed)
    H = comm.rayleigh(B, nr, nt, g, torch.complex128)
    c = comm.from_name(mod)
    idx = c.random_indices((B, nt), g)
    nv = comm.noise_var_from_snr(10.0, nr, nt, c.energy)
    y = comm.awgn((H @ c.indices_to_points(idx, H.dtype)[..., None])[..., 0], nv, g)
    return y, H, torch.full((B,), nv, dtype=torch.float64), idx


@pytest.mark.parametrize("grad_feature", [False, True])
def test_permutation_equivariant(grad_feature):
    det = tiny(grad_feature)
    y, H, nv, idx = system()
    mask = torch.rand(5, 6, generator=torch.Generator().manual_seed(1)) < 0.7
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = det(y, H, nv, mask).logits
    out_p = det(y, H[:, :, perm], nv, mask[:, perm]).logits
    assert torch.allclose(out[:, perm], out_p, atol=1e-10)
    lp = det.training_loss(y, H[:, :, perm], nv, idx[:, perm], mask[:, perm])
    assert torch.allclose(det.training_loss(y, H, nv, idx, mask), lp, atol=1e-12)


@pytest.mark.parametrize("grad_feature", [False, True])
def test_padding_users_with_a_mask_changes_nothing(grad_feature):
    det = tiny(grad_feature)
    y, H, nv, idx = system(nt=4)
    junk = comm.rayleigh(5, 8, 2, torch.Generator().manual_seed(9), torch.complex128)
    Hp = torch.cat([H[:, :, :2], junk[:, :, :1], H[:, :, 2:], junk[:, :, 1:]], -1)   # pads at 2 and 5
    mask = torch.tensor([True, True, False, True, True, False]).expand(5, 6)
    small, padded = det(y, H, nv), det(y, Hp, nv, mask)
    real = mask[0].nonzero()[:, 0]
    assert torch.allclose(small.logits, padded.logits[:, real], atol=1e-10)
    assert bool((padded.logits[:, ~mask[0]] == 0).all()) and bool((padded.hard[:, ~mask[0]] == 0).all())
    # mixed numbers of users in one batch: each row is its own smaller problem
    mixed = torch.ones(5, 4, dtype=torch.bool)
    mixed[0, 3] = mixed[2, 1] = False
    lg = det(y, H, nv, mixed).logits
    assert torch.allclose(lg[0, :3], det(y[:1], H[:1, :, :3], nv[:1]).logits[0], atol=1e-10)
    idxp = torch.zeros(5, 6, dtype=torch.long)
    idxp[:, real] = idx
    assert torch.allclose(det.training_loss(y, H, nv, idx), det.training_loss(y, Hp, nv, idxp, mask), atol=1e-12)


def test_loss_is_eq11_and_options_are_checked():
    det = tiny()
    y, H, nv, idx = system()
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[1, :4] = False
    outs = det._run(y, H, nv, mask)
    want = 0.0
    for b in range(5):
        users = mask[b].nonzero()[:, 0]
        ce = sum(torch.nn.functional.cross_entropy(o[b, users], idx[b, users], reduction="sum") for o in outs)
        want += ce / (len(outs) * len(users))
    assert torch.allclose(det.training_loss(y, H, nv, idx, mask), want / 5)
    # an untrained model starts at the uniform guess's loss ln Q, roughly
    assert abs(float(det.training_loss(y, H, nv, idx).detach()) - math.log(4)) < 0.5
    rebuilt = type(det)(det.constellation, nr=8, nt=6, **det.config())
    assert rebuilt.config() == det.config() and PRESETS["paper"]["d_s"] == 512
    assert det.config()["blocks"] == 2 and len(det.blocks) == 2
    for bad, needle in [(dict(preset="huge"), "preset"), (dict(d_s=0), "d_s"), (dict(heads=1.5), "heads"),
                        (dict(grad_feature=1), "grad_feature")]:
        with pytest.raises(ValueError, match=needle):
            detect.make("remimo", "qam4", nr=8, nt=6, pretrained=False, **bad)
    with pytest.raises(ValueError, match="nr is required"):
        detect.make("remimo", "qam4", pretrained=False)
    with pytest.raises(ValueError, match="Nt=7"):
        det(y, torch.cat([H, H[:, :, :1]], -1), nv)
    te = transmitters_encoding(torch.tensor([16.0, 32.0]), 64, 64, 512)
    assert te.shape == (2, 64) and torch.allclose(te[:, 0], torch.tensor([16.0, 32.0]).sin() / math.sqrt(512))
    assert torch.allclose(te[:, 3], (torch.tensor([16.0, 32.0]) / 128 ** (2 / 64)).cos() / math.sqrt(512))


def test_tiny_training_lowers_the_loss():
    data = DataConfig(nr=8, nt=4, nt_min=2, mod="qam4", snr_min=8.0, snr_max=14.0, nt_dist="triangular")
    torch.manual_seed(0)
    model = detect.make("remimo", "qam4", nr=8, nt=4, pretrained=False, **TINY)
    trainer = Trainer(model, data, TrainConfig(steps=60, batch=64, lr=3e-3, val_every=60, seed=2))
    before = trainer.validate()["loss"]
    after = trainer.train()["loss"]
    assert after < 0.8 * before, (before, after)


def test_training_distribution_options():
    cfg = DataConfig(nr=16, nt=8, nt_min=4, nt_dist="triangular", nt_step=2, snr_min=10.0, snr_max=12.0,
                     snr_per_user=0.5, val_nt=(4, 8))
    vals, p = cfg.user_counts()
    assert vals.tolist() == [4, 6, 8] and torch.allclose(p, torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64) / 4.5)
    gen = BatchGenerator(cfg, seed=0)
    b = gen(3000)
    k = b.mask.sum(-1)
    counts = torch.bincount(k, minlength=9)
    assert counts[[5, 7]].sum() == 0 and counts[4] < counts[6] < counts[8]            # even only, rising
    assert abs(float(counts[8]) / 3000 - 2.5 / 4.5) < 0.04
    lo = 10.0 + 0.5 * (k - 8).float()                                                  # SNR range per Ntr
    assert bool(((b.snr_db >= lo - 1e-4) & (b.snr_db <= lo + 2 + 1e-4)).all())
    state, nxt = gen.state_dict(), gen(16)                                            # resume exactness
    gen2 = BatchGenerator(cfg, seed=0)
    gen2.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(gen2(16), nxt))
    assert BatchGenerator(cfg, seed=0, stream=VAL_STREAM)(6).mask.sum(-1).tolist() == [4, 8, 4, 8, 4, 8]
    # defaults draw the same numbers as before the options existed and keep the old run options
    old = DataConfig(nr=4, nt=4, nt_min=2, mod="qam4")
    assert set(old.to_dict()) == {"nr", "nt", "nt_min", "mod", "snr_min", "snr_max", "channel", "rho_rx", "rho_tx"}
    g = torch.Generator().manual_seed(stream_seed(3, 0, 0))
    H = comm.rayleigh(7, 4, 4, g)
    k = torch.randint(2, 5, (7,), generator=g)                # the original uniform draw, unchanged
    b = BatchGenerator(old, 3)(7)
    assert torch.equal(b.H, H) and torch.equal(b.mask.sum(-1), k)
    # triangular rho: mode at the top of the range, per sample
    kron = DataConfig(nr=6, nt=3, channel="kronecker", rho_rx=(0.55, 0.75), rho_tx=(0.55, 0.75), rho_dist="triangular")
    H = BatchGenerator(kron, seed=0)(4000).H
    rho = (H[:, 1:, :] * H[:, :-1, :].conj()).sum((0, 2)).real / (H[:, :-1, :].abs().square().sum((0, 2)))
    assert abs(float(rho.mean()) - (0.55 + 2 * 0.75) / 3) < 0.03    # E[T(a, b, b)] = (a + 2b) / 3
    for bad, needle in [(dict(nt_dist="x"), "nt_dist"), (dict(nt_step=3), "nt_step"), (dict(rho_dist="x"), "rho_dist"),
                        (dict(val_nt=(9,)), "val_nt"), (dict(snr_per_user=math.inf), "snr_per_user")]:
        with pytest.raises(ValueError, match=needle):
            DataConfig(**{**cfg.to_dict(), **bad}).validate()


def test_train_cli_flags(tmp_path, capsys):
    rc = cli.main(["train", "remimo", "--nr", "8", "--nt", "4", "--nt-min", "2", "--nt-dist", "triangular",
                   "--nt-step", "2", "--snr-per-user", "0.5", "--val-nt", "2", "4", "--mod", "qam4", "--steps", "2",
                   "--batch", "8", "--val-every", "2", "--val-batches", "1", "--no-progress", "--out",
                   str(tmp_path / "r"), *sum((["--model-option", f"{k}={v}"] for k, v in TINY.items()), [])])
    assert rc == 0, capsys.readouterr().err
    rec = weights.read(tmp_path / "r" / "last.safetensors")[1]["record"]
    assert rec["data"]["nt_dist"] == "triangular" and rec["data"]["val_nt"] == [2, 4]
    assert cli.main(["train", "remimo", "--nr", "8", "--nt", "4", "--nt-step", "3", "--nt-min", "2",
                     "--out", str(tmp_path / "x")]) == 2
    assert "nt_step" in capsys.readouterr().err


@pytest.mark.parametrize("nt,snr", [(16, SHIPPED_SNR[16]), (32, SHIPPED_SNR[32])])
def test_shipped_weights_load_and_beat_lmmse(nt, snr):
    """One shipped model (Nr 64, 16-QAM, trained for Ntr 16..32) at both ends of its range:
    fewer symbol errors than LMMSE on the same 300 received vectors."""
    det = detect.make("remimo", "qam16", nr=64, nt=nt)
    assert det.nt == 32 and det.record["data"]["nt_min"] == 16 and "command" in det.record
    c = comm.qam(16)
    g = torch.Generator().manual_seed(100 + nt)
    H = comm.rayleigh(300, 64, nt, g)
    idx = c.random_indices((300, nt), g)
    nv = comm.noise_var_from_snr(snr, 64, nt, c.energy)
    y = comm.awgn((H @ c.indices_to_points(idx, H.dtype)[..., None])[..., 0], nv, g)
    with torch.no_grad():
        errs = {name: int((d(y, H, nv).hard != idx).sum()) for name, d in
                (("remimo", det), ("lmmse", detect.make("lmmse", c)))}
    assert errs["remimo"] < 0.8 * errs["lmmse"], errs
