"""e2e: GNN-tx (learned constellation), GNN-rx on it, joint training, weights, simulate."""
import json

import pytest
import torch

from mimo_fast import cli, comm, detect
from mimo_fast.detect.learned import weights as files
from mimo_fast.detect.learned.e2e import E2E
from mimo_fast.eval import SimConfig, simulate
from mimo_fast.detect.learned.gnn_tx import GNNTx, distance_edges
from mimo_fast.train.data import BatchGenerator, DataConfig

SMALL = dict(message_hidden=(8, 8), gru_size=8, readout_hidden=(16, 16), iterations=3,
             tx_message_hidden=(8, 8), tx_gru_size=8)


def small(nt=2, seed=0, **kw):
    torch.manual_seed(seed)
    return detect.make("e2e", "qam16", nr=4, nt=nt, pretrained=False, **dict(SMALL, **kw))


def batch(nt=2, B=64, snr=(8.0, 14.0), seed=0, nt_min=None):
    return BatchGenerator(DataConfig(nr=4, nt=nt, nt_min=nt_min, snr_min=snr[0], snr_max=snr[1]), seed)(B)


# --- GNN-tx ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("residual", [False, True])
def test_learned_constellation_unit_power_distinct_points(residual):
    torch.manual_seed(1)
    tx = GNNTx("qam16", message_hidden=(8, 8), gru_size=8, residual=residual)
    pts = tx().detach()
    assert pts.shape == (16,) and pts.is_complex()
    assert abs(float(pts.abs().square().mean()) - 1) < 1e-5
    d = (pts[:, None] - pts[None]).abs() + torch.eye(16) * 10
    # distinct; the paper's plain GNN-tx starts nearly collapsed (docs/e2e.md), the residual
    # one at the QAM (minimum distance 2/sqrt(10))
    assert float(d.min()) > (0.6 if residual else 1e-5)
    c = tx.constellation()
    assert isinstance(c, comm.Constellation) and c.order == 16 and c.name == "e2e-qam16"
    assert abs(c.energy - 1) < 1e-5
    if residual:                      # zero-initialised update: starts as the initial QAM
        assert torch.allclose(c.points, comm.qam(16).points, atol=1e-6)
    else:
        assert not torch.allclose(c.points, comm.qam(16).points, atol=1e-2)


def test_gnn_tx_edges_and_errors():
    e = distance_edges(comm.qam(4).points)
    assert e.shape == (1, 4, 4, 1) and float(e.max()) == 1.0 and float(e[0, 0, 0, 0]) == 0.0
    with pytest.raises(ValueError, match="gru_size"):
        GNNTx("qam16", gru_size=0)
    with pytest.raises(TypeError, match="residual"):
        GNNTx("qam16", residual=1)
    with pytest.raises(ValueError, match="residual_scale"):
        GNNTx("qam16", residual=True, residual_scale=0.0)


# --- the model ------------------------------------------------------------------------------------
def test_defaults_are_the_papers_sizes_and_options_checked():
    det = detect.make("e2e", "qam16", pretrained=False)
    cfg = det.config()
    assert cfg["message_hidden"] == [128, 64] and cfg["gru_size"] == 128 and cfg["readout_hidden"] == [256, 256]
    assert cfg["rounds"] == 2 and cfg["damping"] == 0.7 and cfg["iterations"] == 10
    assert cfg["tx_message_hidden"] == [128, 64] and cfg["tx_gru_size"] == 128 and cfg["init"] == "qam16"
    # GNN-rx is GEPNet's receiver: the structure of the GEPNet authors' code by default
    assert cfg["message_out_act"] == "relu" and cfg["readout_act"] == "none" and cfg["node_sign"] == -1.0
    assert cfg["lam0"] == 2.0 and cfg["v_min"] == 1e-13
    assert det.mpnn.message.out_act == "relu" and det.mpnn.readout_mlp.hidden_act == "none"
    assert E2E.LEGACY_STRUCTURE == dict(message_out_act="none", readout_act="relu", node_sign=1.0, lam0=1.0,
                                        v_min=5e-7)
    with pytest.raises(ValueError, match="readout"):
        E2E("qam16", readout="pam")
    with pytest.raises(ValueError, match="init"):
        E2E(comm.Constellation(comm.qam(16).points * 1j))


def test_receiver_is_permutation_equivariant_over_users():
    det = small(nt=3, seed=2).double()
    b = batch(nt=3, B=8)
    H, y, nv = b.H.to(torch.complex128), b.y.to(torch.complex128), b.noise_var.double()
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        a = det(y, H, nv).logits
        p = det(y, H[:, :, perm], nv).logits
        la = det.training_loss(y, H, nv, b.x_idx)
        lp = det.training_loss(y, H[:, :, perm], nv, b.x_idx[:, perm])
    assert torch.allclose(p, a[:, perm], atol=1e-9)
    assert torch.allclose(la, lp, atol=1e-9)


def test_retransmit_is_the_learned_points_through_the_same_channel_and_noise():
    det = small(seed=3)
    b = batch(B=16, nt_min=1)
    qam = comm.qam(16).points_as(torch.complex64)
    noise = b.y - (b.H @ (qam[b.x_idx] * b.mask)[..., None])[..., 0]
    y2 = det.retransmit(b.y, b.H, b.x_idx, b.mask)
    x2 = det.constellation.points_as(torch.complex64)[b.x_idx] * b.mask
    assert torch.allclose(y2, (b.H @ x2[..., None])[..., 0] + noise, atol=1e-5)


def test_training_lowers_the_loss_and_moves_tx_and_constellation():
    # cavity_skip in float32 needs the legacy floor v_min = 5e-7 (the authors' 1e-13 is refused)
    with pytest.raises(ValueError, match="cavity_skip in float32 needs v_min"):
        b = batch(B=4, seed=5)
        small(seed=4, cavity_skip=True).training_loss(b.y, b.H, b.noise_var, b.x_idx, b.mask)
    det = small(seed=4, tx_residual=True, cavity_skip=True, v_min=5e-7)
    b = batch(B=128, seed=5)
    opt = torch.optim.Adam(det.parameters(), lr=1e-2)
    start_pts = det.constellation.points.clone()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = det.training_loss(b.y, b.H, b.noise_var, b.x_idx, b.mask)
        loss.backward()
        assert det.tx.update.weight.grad.abs().sum() > 0          # GNN-tx gets gradients (eq. 12)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.85 * losses[0], losses
    det.eval()                                                     # refreshes det.constellation
    assert not torch.allclose(det.constellation.points, start_pts, atol=1e-4)
    assert abs(det.constellation.energy - 1) < 1e-5
    assert torch.allclose(det.constellation.points_as(torch.complex64), det.tx().detach(), atol=1e-6)


def test_masked_users_change_nothing_for_the_others():
    det = small(nt=3, seed=6)
    b = batch(nt=3, B=8)
    mask = torch.tensor([True, False, True]).expand(8, 3)
    H2 = b.H.clone()
    H2[:, :, 1] = 7.0
    with torch.no_grad():
        a = det(b.y, b.H, b.noise_var, mask).logits
        c = det(b.y, H2, b.noise_var, mask).logits
    assert torch.allclose(a[:, [0, 2]], c[:, [0, 2]], atol=1e-5)


# --- weights, make, simulate ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_file(tmp_path_factory):
    det = small(seed=7, tx_residual=False)
    b = batch(B=64, seed=8)
    opt = torch.optim.Adam(det.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        det.training_loss(b.y, b.H, b.noise_var, b.x_idx, b.mask).backward()
        opt.step()
    path = tmp_path_factory.mktemp("e2e") / "e2e.safetensors"
    files.save(det, path, {"command": "test"})
    return path, det


def test_saved_constellation_is_the_trained_one_and_loads(trained_file):
    path, det = trained_file
    _, meta = files.read(path)
    assert meta["constellation"].name == "e2e-qam16"
    det.eval()
    assert torch.allclose(meta["constellation"].points, det.constellation.points, atol=1e-12)
    loaded = detect.make("e2e", "qam16", nr=4, nt=2, weights=path)
    assert torch.allclose(loaded.constellation.points, det.constellation.points, atol=1e-6)
    b = batch(B=8)
    with torch.no_grad():
        assert torch.allclose(loaded(b.y, b.H, b.noise_var).logits, det(b.y, b.H, b.noise_var).logits, atol=1e-4)
    # any detector takes it: ML / LMMSE on the learned points
    for name in ("ml", "lmmse"):
        out = detect.make(name, loaded.constellation)(b.y, b.H, b.noise_var)
        assert out.logits.shape == (8, 2, 16)
    with pytest.raises(files.WeightsError, match="qam16"):
        detect.make("e2e", "qam4", nr=4, nt=2, weights=path)


def test_simulate_transmits_with_the_learned_constellation(trained_file):
    path, _ = trained_file
    det = detect.make("e2e", "qam16", nr=4, nt=2, weights=path)
    learned = det.constellation
    cfg = SimConfig(nr=4, nt=2, mod="qam16", min_errors=10**6, max_symbols=2000, batch=500, seed=1)
    ml_learned = detect.make("ml", learned)
    ml_learned.transmits_own_constellation = True          # sends its own points, like e2e
    mixed = simulate({"e2e": det, "ml": detect.make("ml", "qam16"), "mlL": ml_learned}, comm.qam(16), cfg,
                     [10.0], progress=False)
    alone = simulate({"mlL": detect.make("ml", learned)}, learned, cfg, [10.0], progress=False)
    # same channels, messages and noise whichever constellation a detector sends with
    assert mixed[2]["symbol_errors"] == alone[0]["symbol_errors"]
    assert mixed[0]["symbols"] == 2000


def test_simulate_refuses_a_learned_constellation_of_another_order(trained_file):
    path, _ = trained_file
    det = detect.make("e2e", "qam16", nr=4, nt=2, weights=path)
    cfg = SimConfig(nr=4, nt=2, mod="qam4", min_errors=10, max_symbols=100, batch=50)
    with pytest.raises(ValueError, match="--mod"):
        simulate({"e2e": det}, comm.qam(4), cfg, [10.0], progress=False)


def test_simulate_cli_e2e_and_constellation_from(trained_file, tmp_path, capsys):
    path, _ = trained_file
    small_args = ["--nr", "4", "--nt", "2", "--mod", "qam16", "--min-errors", "20", "--max-symbols", "800",
                  "--batch", "200", "--no-progress", "--snr", "10"]
    out = tmp_path / "a.json"
    assert cli.main(["simulate", *small_args, "--detector", "e2e", "lmmse", "--weights", str(path),
                     "--json", str(out)]) == 0
    assert [r["detector"] for r in json.loads(out.read_text())["results"]] == ["e2e", "lmmse"]
    out2 = tmp_path / "b.json"
    assert cli.main(["simulate", *small_args, "--detector", "ml", "lmmse", "--constellation-from", str(path),
                     "--json", str(out2)]) == 0
    data = json.loads(out2.read_text())
    assert data["config"]["constellation"]["name"] == "e2e-qam16" and len(data["config"]["constellation"]["points"]) == 16
    capsys.readouterr()
    assert cli.main(["simulate", *small_args, "--detector", "ml", "--constellation-from",
                     str(tmp_path / "none.safetensors")]) == 2
    assert "--constellation-from" in capsys.readouterr().err


def test_train_cli_few_steps(tmp_path):
    out = tmp_path / "run"
    opts = [x for k, v in SMALL.items() for x in ("--model-option", f"{k}={json.dumps(v)}")]
    rc = cli.main(["train", "e2e", "--nr", "4", "--nt", "2", "--steps", "2", "--batch", "16", "--val-every", "2",
                   "--val-batches", "1", "--out", str(out), "--no-progress", *opts])
    assert rc == 0
    _, meta = files.read(out / "last.safetensors")
    assert meta["detector"] == "e2e" and meta["constellation"].name == "e2e-qam16"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and 0 <= log[-1]["val_ser"] <= 1
    # --init from an e2e file (which holds its learned constellation; --mod is the QAM it started
    # from), adding the gate (which in float32 needs the legacy floor v_min): the learned points carry over
    out2 = tmp_path / "run2"
    rc = cli.main(["train", "e2e", "--nr", "4", "--nt", "2", "--steps", "1", "--batch", "16", "--val-every", "1",
                   "--val-batches", "1", "--lr", "1e-12", "--out", str(out2), "--no-progress",
                   "--init", str(out / "last.safetensors"), "--model-option", "cavity_skip=true",
                   "--model-option", "cavity_gate=true", "--model-option", "v_min=5e-7"])
    assert rc == 0
    _, meta2 = files.read(out2 / "last.safetensors")
    assert meta2["config"]["cavity_gate"] is True and meta2["record"]["init"]["steps"] == 2
    torch.testing.assert_close(meta2["constellation"].points, meta["constellation"].points, atol=1e-6, rtol=0)


# --- shipped weights ------------------------------------------------------------------------------
# (nt, snr_db, vectors, e2e's SER at most this multiple of EP's on 16-QAM, same draws). The 8x8
# model is about as good as EP (experiments/e2e/simulate_e2e_8x8_qam16*.json); the 8x2 one (session 5,
# tx_residual=false) beats it (measured 0.85 here; 10-14% below 16-QAM ML at 10-14 dB in
# simulate_e2e_8x2_notxres_lr3e-4_step28208.json). This checks that they load and detect on their
# learned points; the paper's gains are measured in experiments/e2e/.
SHIPPED = [(2, 10.0, 3000, 1.0), (8, 22.0, 1000, 1.25)]


@pytest.mark.parametrize("nt,snr,B,ratio", SHIPPED, ids=["8x2", "8x8"])
def test_shipped_constellation_and_receiver_load_and_run(nt, snr, B, ratio):
    det = detect.make("e2e", "qam16", nr=8, nt=nt)
    assert det.record["command"].startswith("mimo-fast train e2e") and det.record["wall_clock_s"] > 0
    c = det.constellation
    assert c.name == "e2e-qam16" and c.order == 16 and abs(c.energy - 1) < 1e-6
    d = (c.points[:, None] - c.points[None]).abs() + torch.eye(16) * 9
    assert float(d.min()) > 0.3
    _, meta = files.read(files.find_shipped("e2e", 8, nt, comm.qam(16)))
    assert torch.allclose(meta["constellation"].points, c.points, atol=1e-6)
    cfg = SimConfig(nr=8, nt=nt, mod="qam16", min_errors=10**9, max_symbols=B * nt, batch=B, seed=11)
    res = {r["detector"]: r["ser"] for r in simulate({"e2e": det, "ep": detect.make("ep", "qam16")}, comm.qam(16),
                                                     cfg, [snr], progress=False)}
    assert res["ep"] > 0 and res["e2e"] <= ratio * res["ep"], res
