"""`mimo-fast bench --quick`: runs every op on small shapes, checks every answer against
the reference (exit code 1 on a mismatch), and writes JSON."""
import json

from mimo_fast.bench import baselines, shapes
from mimo_fast.cli import main
from op_samples import amp_oracle, ep_oracle, mpnn_oracle
import torch


def test_bench_quick_runs_and_checks(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--quick", "--repeat", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["op"] for r in rows} == {"mpnn_message_sum", "ep_lmmse", "amp_step"}
    assert all(r["check"] == "ok" and r["median_ms"] > 0 for r in rows)
    assert "naive eager" in capsys.readouterr().out


def test_baselines_agree_with_oracles():
    args = shapes.mpnn_inputs(2, 4, 3, 2, 5, 4, 3, dtype=torch.float64)
    want = mpnn_oracle(*args)
    torch.testing.assert_close(baselines.mpnn_naive(*args), want)
    torch.testing.assert_close(baselines.mpnn_careful(*args), want)
    ep = shapes.ep_inputs(3, 5, dtype=torch.float64)
    for f in (baselines.ep_linalg, baselines.ep_inv, baselines.ep_triangular):
        for got, w in zip(f(*ep), ep_oracle(*ep)):
            torch.testing.assert_close(got, w)
    amp = shapes.amp_inputs(2, 6, 4, dtype=torch.float64)
    for f in (baselines.amp_eager, baselines.amp_naive):
        for got, w in zip(f(*amp), amp_oracle(*amp)):
            torch.testing.assert_close(got, w)
