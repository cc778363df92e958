"""The experiment scripts behind the issue-6/8 notes (experiments/<name>/<name>.py) and the
learning-curve tool (tools/) still run (tiny settings), and their fixed ingredients are what
the notes say."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: script -> its folder
WHERE = {"e2e_constellation_headroom": ROOT / "experiments" / "e2e_constellation_headroom",
         "e2e_points_pullback": ROOT / "experiments" / "e2e_points_pullback",
         "gepnet_hard_examples": ROOT / "experiments" / "gepnet_hard_examples",
         "gepnet_learning_curve": ROOT / "tools",
         "authors_train_acc": ROOT / "experiments" / "gepnet_published"}


def script(name):
    spec = importlib.util.spec_from_file_location(name, WHERE[name] / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_headroom_hexagon_and_free_points(tmp_path):
    m = script("e2e_constellation_headroom")
    hexa = m.best_hex16()
    assert hexa.shape == (16,) and abs(np.mean(np.abs(hexa) ** 2) - 1) < 1e-12 and abs(hexa.mean()) < 1e-12
    assert m.figure_of_merit(hexa) == pytest.approx(16 / 35, abs=1e-9)   # 0.4571 > 16-QAM's 0.4
    from mimo_fast import comm
    assert m.figure_of_merit(comm.qam(16).points.numpy()) == pytest.approx(0.4)
    # zero steps: the free points are 16-QAM itself; a few steps move them, same seed same points
    q = comm.qam(16).points
    assert torch.allclose(m.train_free_points(8, 2, 13, 16, 0, 8, 3e-3, 0), q, atol=1e-12)
    a = m.train_free_points(4, 1, 5, 8, 3, 16, 3e-2, 1)
    assert torch.equal(a, m.train_free_points(4, 1, 5, 8, 3, 16, 3e-2, 1))
    assert not torch.allclose(a, q, atol=1e-4)
    out = tmp_path / "hr"
    m.main(["--nr", "4", "--nt", "1", "--snr", "4", "8", "--min-errors", "20", "--max-symbols", "4000",
            "--batch", "2000", "--free-steps", "2", "--out", str(out)])
    res = json.loads(out.with_suffix(".json").read_text())
    assert set(res["results"]) == {"qam16", "hex16", "free16"} and len(res["results"]["hex16"]) == 2


def test_pullback_runs_and_logs(tmp_path):
    log = tmp_path / "pb.jsonl"
    script("e2e_points_pullback").main(["--steps", "2", "--every", "1", "--batch", "4", "--log", str(log)])
    rows = [json.loads(s) for s in log.read_text().splitlines()]
    assert rows[0]["args"]["tx_lr"] == 1e-2 and [r["step"] for r in rows[1:]] == [1, 2]
    assert all(0 < r["dmin2"] <= 0.5 and np.isfinite(r["loss"]) for r in rows[1:])


def test_hard_examples_runs_and_refuses_bad_options(tmp_path):
    m = script("gepnet_hard_examples")
    m.main(["--init", "shipped", "--out", str(tmp_path / "hx"), "--steps", "1", "--val-every", "1",
            "--candidates", "256", "--batch", "16", "--weighting", "importance", "--freeze-gate"])
    rows = [json.loads(s) for s in (tmp_path / "hx.jsonl").read_text().splitlines()]
    assert rows[0]["ep_val_ser"] > rows[0]["init_val_ser"] > 0     # the shipped file beats EP here
    assert rows[1]["step"] == 1 and rows[1]["hard"] <= 8
    for bad in (["--hard-fraction", "0"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            m.parse(["--init", "shipped", "--out", "x", *bad])


def test_learning_curve_evaluates_snapshots_once(tmp_path):
    """--keep-every snapshots -> the learning-curve script: one point per snapshot, EP on the
    same draws, cached (a rerun evaluates nothing new)."""
    from mimo_fast import comm
    from mimo_fast.detect import REGISTRY
    from mimo_fast.train import DataConfig, TrainConfig, Trainer
    torch.manual_seed(0)
    model = REGISTRY["gepnet"](comm.qam(16), nr=8, nt=8, iterations=2, rounds=1, loss="final")
    run = tmp_path / "run"
    Trainer(model, DataConfig(nr=8, nt=8), TrainConfig(steps=2, batch=4, val_every=1, val_batches=1),
            out=run, keep_every=1).train()
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step_00000001.safetensors",
                                                                     "step_00000002.safetensors"]
    m = script("gepnet_learning_curve")
    out = tmp_path / "curve.json"
    args = [str(run), "--symbols", "400", "800", "--batch", "50", "--json", str(out), "--png", str(tmp_path / "c.png")]
    assert m.main(args) == 0
    res = json.loads(out.read_text())
    assert [p["step"] for p in res["points"]] == [1, 2] and [p["samples"] for p in res["points"]] == [4, 8]
    assert res["ep"]["25"]["symbols"] == 800 and res["points"][0]["gepnet"]["20"]["symbols"] == 400
    before = out.read_text()
    m.main(args)
    assert json.loads(out.read_text())["points"] == json.loads(before)["points"]
    assert (tmp_path / "c.png").stat().st_size > 0


def test_authors_train_acc_measures_the_authors_metric(tmp_path):
    """The comparison with the GEPNet authors' training log: their batch mix (1/3 of batches
    4 users, 2/3 8 users) of per-user-count SERs, cached per snapshot, a reference model, a plot."""
    from mimo_fast import comm
    from mimo_fast.detect import REGISTRY
    from mimo_fast.detect.learned import weights
    m = script("authors_train_acc")
    assert m.authors_ser(0.5)["epochs"] == [0, 0] and m.authors_ser(32.0)["epochs"] == [30, 34]
    assert m.authors_ser(500) is None
    torch.manual_seed(0)
    model = REGISTRY["gepnet"](comm.qam(16), nr=8, nt=8, iterations=2, rounds=1, loss="final").double()
    (tmp_path / "run" / "snapshots").mkdir(parents=True)
    weights.save(model, tmp_path / "run" / "snapshots" / "step_00000010.safetensors")
    weights.save(model, tmp_path / "ref.safetensors")
    out = tmp_path / "a.json"
    args = [str(tmp_path / "run"), "--steps", "10", "--samples", "60", "--batch", "30", "--json", str(out),
            "--png", str(tmp_path / "a.png"), "--reference", "same model", str(tmp_path / "ref.safetensors")]
    assert m.main(args) == 0
    res = json.loads(out.read_text())
    pt = res["points"]["10"]
    assert pt["samples_seen"] == 1280 and pt["authors"]["epochs"] == [0, 0]
    for rule in ("ser_posterior_mean", "ser_argmax"):
        r = pt[rule]
        assert r["batch_mix"] == pytest.approx((r["nt4"] + 2 * r["nt8"]) / 3)
        assert 0.0 <= r["nt4"] <= 1.0 and 0.0 <= r["nt8"] <= 1.0
    # the reference is the same model on the same draws: the same numbers
    assert res["references"]["same model"] == {k: v for k, v in pt.items() if k in res["references"]["same model"]}
    assert (tmp_path / "a.png").stat().st_size > 0
    before = out.read_text()
    m.main(args)                                    # cached: nothing measured again
    assert json.loads(out.read_text())["points"] == json.loads(before)["points"]
