"""mimo_fast.eval: Monte-Carlo engine (seeds, stopping rules, timing, plot, distributed)."""
import os

import pytest
import torch

from mimo_fast import comm, detect
from mimo_fast.eval import SimConfig, format_table, plot, simulate

KEYS = {"detector", "snr_db", "ser", "ber", "symbol_errors", "symbols", "seconds"}


def dets(c, names=("zf", "lmmse")):
    return {n: detect.make(n, c) for n in names}


def small_cfg(**kw):
    base = dict(nr=4, nt=4, mod="qam4", min_errors=50, max_symbols=4000, batch=200, seed=3)
    base.update(kw)
    return SimConfig(**base)


def test_same_seed_same_numbers():
    c = comm.qam(4)
    a = simulate(dets(c), c, small_cfg(), [4.0, 8.0], progress=False)
    b = simulate(dets(c), c, small_cfg(), [4.0, 8.0], progress=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(a) == strip(b)
    other = simulate(dets(c), c, small_cfg(seed=4), [4.0, 8.0], progress=False)
    assert strip(other) != strip(a)


def test_results_schema_order_and_stopping():
    c = comm.qam(4)
    res = simulate(dets(c), c, small_cfg(), [0.0, 30.0], progress=False)
    assert [(r["detector"], r["snr_db"]) for r in res] == [("zf", 0.0), ("zf", 30.0), ("lmmse", 0.0), ("lmmse", 30.0)]
    for r in res:
        assert KEYS <= set(r) and r["seconds"] >= 0
        assert r["ser"] == r["symbol_errors"] / r["symbols"]
        assert 0 <= r["ber"] <= r["ser"] + 1e-12
        # stops on min_errors (low SNR) or on max_symbols (high SNR), within one batch
        assert r["symbol_errors"] >= 50 or r["symbols"] >= 4000
        assert r["symbols"] <= 4000 and r["symbols"] - 200 * 4 < max(4000 * (r["symbol_errors"] < 50), 1) + 200 * 4
    low = [r for r in res if r["snr_db"] == 0.0]
    assert all(r["symbols"] < 4000 for r in low)


def test_detectors_share_the_draws():
    """Common random numbers: a detector's numbers do not depend on which others run."""
    c = comm.qam(4)
    both = simulate(dets(c), c, small_cfg(), [6.0], progress=False)
    alone = simulate(dets(c, ("lmmse",)), c, small_cfg(), [6.0], progress=False)
    assert both[1]["symbol_errors"] == alone[0]["symbol_errors"]


def test_kronecker_and_csi_error_run_and_hurt():
    c = comm.qam(4)
    cfg = small_cfg(min_errors=10**9, max_symbols=8000, batch=500)
    base = simulate(dets(c, ("lmmse",)), c, cfg, [12.0], progress=False)[0]["ser"]
    kron = simulate(dets(c, ("lmmse",)), c, small_cfg(min_errors=10**9, max_symbols=8000, batch=500,
                                                      channel="kronecker", rho_rx=0.9, rho_tx=(0.5, 0.9)),
                    [12.0], progress=False)[0]["ser"]
    csi = simulate(dets(c, ("lmmse",)), c, small_cfg(min_errors=10**9, max_symbols=8000, batch=500,
                                                     csi_error_var=0.3), [12.0], progress=False)[0]["ser"]
    assert kron > base and csi > base


def test_config_validation():
    c = comm.qam(4)
    with pytest.raises(ValueError, match="batch"):
        simulate(dets(c), c, small_cfg(batch=0), [1.0], progress=False)
    with pytest.raises(ValueError, match="channel"):
        simulate(dets(c), c, small_cfg(channel="awgn"), [1.0], progress=False)


def test_table_and_plot(tmp_path):
    c = comm.qam(4)
    res = simulate(dets(c), c, small_cfg(), [2.0, 6.0], progress=True)
    text = format_table(res)
    assert "lmmse" in text and "ser" in text
    path = tmp_path / "ser.png"
    plot(res, str(path), "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _worker(rank, world, init_file, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    c = comm.qam(4)
    res = simulate(dets(c, ("lmmse",)), c, small_cfg(min_errors=10**9, max_symbols=4000), [5.0], progress=False)
    if rank == 0:
        torch.save(res, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_two_ranks_sum_counts(tmp_path):
    import torch.multiprocessing as mp
    out = str(tmp_path / "res.pt")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    res = torch.load(out)[0]
    assert res["symbols"] == 4000                 # 2000 per rank, summed
    # ranks draw disjoint streams: not twice the single-rank count of one rank's stream
    single = simulate(dets(comm.qam(4), ("lmmse",)), comm.qam(4), small_cfg(min_errors=10**9, max_symbols=2000),
                      [5.0], progress=False)[0]
    assert res["symbol_errors"] != 2 * single["symbol_errors"] or single["symbol_errors"] == 0
