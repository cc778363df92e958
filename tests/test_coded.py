"""mimo_fast.eval.coded: coded BER/BLER over Sionna's 5G LDPC code (and ``mimo-fast coded``)."""
import argparse
import json
import math
import sys

import pytest
import torch

pytest.importorskip("sionna.phy", reason="coded simulation needs sionna-no-rt (the [sionna] extra)")

from sionna.phy import mimo as smimo  # noqa: E402
from sionna.phy.mapping import Mapper  # noqa: E402

from mimo_fast import comm, detect  # noqa: E402
from mimo_fast.eval import coded  # noqa: E402
from mimo_fast.cli import coded as cli_coded  # noqa: E402
from mimo_fast.eval.montecarlo import point_generator  # noqa: E402

# 4x4 16-QAM, a rate-1/2 (512, 256) code: 128 channel uses per codeword, 64 codewords a batch
CFG = dict(nr=4, nt=4, mod="qam16", k=256, n=512, batch=16)


def test_bler_falls_with_snr_and_counts_are_consistent():
    c = comm.qam(16)
    cfg = coded.CodedConfig(**CFG, min_block_errors=40, max_blocks=128, seed=1)
    res = coded.run_coded({"lmmse": detect.make("lmmse", c)}, c, cfg, [9.0, 15.0], progress=False)
    lo, hi = res
    assert (lo["snr_db"], hi["snr_db"]) == (9.0, 15.0)
    assert lo["bler"] > 0.5 and hi["bler"] < lo["bler"] and hi["ber"] < lo["ber"]
    for r in res:
        assert r["bits"] == r["blocks"] * cfg.k and r["blocks"] % cfg.nt == 0
        assert r["block_errors"] <= r["blocks"] and r["bit_errors"] >= r["block_errors"]
        assert r["bler"] == r["block_errors"] / r["blocks"]
    # a point stops at min_block_errors (checked per batch of 64 codewords)
    assert lo["blocks"] == 64


def _decode_blocks(dec, llr, frames, nt, u):
    wrong = dec(coded.codeword_llrs(llr, frames, nt).float()) != u
    return wrong.float().mean(-1).flatten(), wrong.any(-1).float().flatten()


def test_lmmse_coded_matches_sionna_linear_detector_pipeline():
    # the same info bits, channels and noise: mimo_fast's labels + lmmse against Sionna's 5G
    # labels (its Mapper) + sionna.phy.mimo.LinearDetector, both into the same decoder
    c, snr = comm.qam(16), 12.0
    cfg = coded.CodedConfig(**CFG, min_block_errors=10 ** 6, max_blocks=192, seed=2)
    res = coded.run_coded({"lmmse": detect.make("lmmse", c)}, c, cfg, [snr], progress=False)[0]
    enc, dec = coded.make_code(cfg.k, cfg.n)
    g = point_generator(cfg.seed, 0)
    ref = smimo.LinearDetector("lmmse", "bit", "maxlog", "qam", 4)
    ours_ber, ours_bl, ref_ber, ref_bl = [], [], [], []
    for _ in range(cfg.max_blocks // (cfg.batch * cfg.nt)):
        fr = coded.draw_frames(cfg, c, enc, cfg.batch, snr, g)
        y = (fr.H @ c.indices_to_points(fr.idx)[..., None])[..., 0] + fr.noise
        b, bl = _decode_blocks(dec, detect.make("lmmse", c)(y, fr.H, fr.noise_var).llr("maxlog"), cfg.batch, cfg.nt,
                               fr.u)
        ours_ber.append(b)
        ours_bl.append(bl)
        U = cfg.n // 4
        x = Mapper("qam", 4)(fr.c).permute(0, 2, 1).reshape(-1, cfg.nt)        # Sionna's labels
        y_s = (fr.H @ x[..., None])[..., 0] + fr.noise
        s = fr.noise_var * torch.eye(cfg.nr, dtype=torch.complex64).expand(y_s.shape[0], -1, -1)
        b, bl = _decode_blocks(dec, ref(y_s, fr.H, s), cfg.batch, cfg.nt, fr.u)
        assert U * cfg.batch == y_s.shape[0]
        ref_ber.append(b)
        ref_bl.append(bl)
    ours_ber, ours_bl, ref_ber, ref_bl = (torch.cat(v) for v in (ours_ber, ours_bl, ref_ber, ref_bl))
    # run_coded is this very computation on the same draws
    assert res["block_errors"] == int(ours_bl.sum()) and res["blocks"] == ours_bl.numel()
    assert res["bit_errors"] == round(float(ours_ber.sum()) * cfg.k)
    assert 0.1 < float(ref_bl.mean()) < 0.9            # a point where both can err or not
    for a, b in ((ours_ber, ref_ber), (ours_bl, ref_bl)):
        d = a - b                                       # paired: same bits, channels, noise
        assert abs(float(d.mean())) <= 4 * float(d.std()) / math.sqrt(d.numel()) + 1e-3


def test_tdl_channel_runs_and_repeats():
    c = comm.qam(4)
    cfg = coded.CodedConfig(nr=4, nt=2, mod="qam4", k=128, n=256, batch=8, min_block_errors=10 ** 6,
                            max_blocks=16, channel="tdl", fft_size=12, seed=3)

    def run():
        rows = coded.run_coded({"lmmse": detect.make("lmmse", c)}, c, cfg, [-6.0, 10.0], progress=False)
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]
    a, b = run(), run()
    assert a == b
    assert a[0]["bler"] > a[1]["bler"]


def _args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    cli_coded.add_parser(parser.add_subparsers())
    return parser.parse_args(["coded", "--nr", "4", "--nt", "4", "--mod", "qam4", "--detector", "lmmse", "ep",
                              "--snr", "4", "--k", "128", "--n", "256", "--max-blocks", "32", "--batch", "8",
                              "--no-progress", *extra])


def test_command_writes_json_and_plot(tmp_path, capsys):
    out = tmp_path / "res" / "coded.json"
    extra = ["--json", str(out), "--llr", "app", "--seed", "5"]
    try:
        import matplotlib  # noqa: F401
        extra += ["--plot", str(tmp_path / "coded.png")]
    except ImportError:
        pass
    args = _args(tmp_path, *extra)
    assert args.func(args) == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["llr"] == "app" and doc["config"]["detectors"] == ["lmmse", "ep"]
    assert "complete" not in doc and [r["detector"] for r in doc["results"]] == ["lmmse", "ep"]
    assert {"ber", "bler", "bit_errors", "bits", "block_errors", "blocks", "seconds"} <= set(doc["results"][0])
    if "--plot" in extra:
        assert (tmp_path / "coded.png").stat().st_size > 0
    assert "lmmse" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:Effective coderate")   # Sionna warns before refusing k > n
@pytest.mark.parametrize("extra,message", [
    (["--n", "255"], "multiple of the 2 bits"),
    (["--k", "300"], "k=300, n=256"),
    (["--rho-rx", "0.5"], "kronecker"),
    (["--snr", "nan"], "--snr"),
])
def test_command_refuses_bad_options(tmp_path, capsys, extra, message):
    args = _args(tmp_path, *extra)
    assert args.func(args) == 2
    assert message in capsys.readouterr().err


def test_missing_sionna_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sionna", None)
    monkeypatch.setitem(sys.modules, "sionna.phy", None)
    with pytest.raises(ImportError, match=r"pip install 'mimo-fast\[sionna\]'"):
        coded.make_code(128, 256)
