"""``mimo-fast simulate``: flags, table, JSON schema, errors."""
import json
import subprocess
import sys

import pytest

from mimo_fast import cli

KEYS = {"detector", "snr_db", "ser", "ber", "symbol_errors", "symbols", "seconds"}
SMALL = ["--nr", "4", "--nt", "2", "--mod", "qam4", "--min-errors", "20", "--max-symbols", "2000",
         "--batch", "250", "--no-progress"]


def test_simulate_writes_json_schema_and_table(tmp_path, capsys):
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    rc = cli.main(["simulate", *SMALL, "--detector", "ep", "lmmse", "--snr", "5", "10",
                   "--json", str(out), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "detector" in text and "lmmse" in text and "ep" in text
    data = json.loads(out.read_text())
    assert set(data) == {"config", "results"}
    assert data["config"]["nr"] == 4 and data["config"]["mod"] == "qam4" and data["config"]["snr_db"] == [5.0, 10.0]
    assert len(data["results"]) == 4
    for r in data["results"]:
        assert KEYS <= set(r)
        assert isinstance(r["symbol_errors"], int) and isinstance(r["symbols"], int)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_simulate_kronecker_flags(tmp_path):
    out = tmp_path / "k.json"
    rc = cli.main(["simulate", *SMALL, "--detector", "zf", "--snr", "10", "--channel", "kronecker",
                   "--rho-rx", "0.5", "--rho-tx", "0.1,0.4", "--csi-error-var", "0.01", "--json", str(out)])
    assert rc == 0
    cfg = json.loads(out.read_text())["config"]
    assert cfg["rho_rx"] == 0.5 and cfg["rho_tx"] == [0.1, 0.4] and cfg["csi_error_var"] == 0.01


def test_mfb_adds_the_bound_under_every_detector(tmp_path, capsys):
    out, png = tmp_path / "m.json", tmp_path / "m.png"
    rc = cli.main(["simulate", *SMALL, "--detector", "ml", "--snr", "0", "6", "--mfb", "--json", str(out),
                   "--plot", str(png)])
    assert rc == 0
    assert "matched-filter bound: 0 dB" in capsys.readouterr().out
    data = json.loads(out.read_text())
    mfb = data["bounds"]["mfb"]
    assert [b["snr_db"] for b in mfb] == [0.0, 6.0] and mfb[0]["ser"] > mfb[1]["ser"] > 0
    for r, b in zip(data["results"], mfb):
        assert r["ser"] > b["ser"]          # even ML stays above the genie bound
    assert png.read_bytes()[:4] == b"\x89PNG"
    rc = cli.main(["simulate", *SMALL, "--detector", "zf", "--snr", "6", "--mfb", "--channel", "kronecker",
                   "--rho-rx", "0.1,0.5"])
    assert rc == 2 and "rho_rx" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["remimo", "e2e", "gepnet"])
def test_learned_detector_without_weights_is_a_clear_error(name, capsys):
    # 4x2 QPSK: nothing is shipped for these; the error lists what is
    rc = cli.main(["simulate", *SMALL, "--detector", name, "--snr", "10"])
    assert rc == 2
    err = capsys.readouterr().err
    assert name in err and "no shipped weights" in err and "shipped for" in err


@pytest.mark.parametrize("args,needle", [
    (["--mod", "qam8"], "modulation"),
    (["--batch", "0"], "batch"),
    (["--rho-rx", "0.5"], "kronecker"),
])
def test_bad_flags(args, needle, capsys):
    rc = cli.main(["simulate", *SMALL, "--detector", "zf", "--snr", "10", *args])
    assert rc == 2 and needle in capsys.readouterr().err


def test_unknown_detector_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        cli.main(["simulate", "--detector", "nope", "--snr", "1"])
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "mimo_fast.cli", "simulate", *SMALL, "--detector", "mf",
                        "--snr", "10"], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    assert "mf" in r.stdout


def test_default_setting_follows_a_learned_detectors_shipped_file():
    """With no --nr/--nt/--mod, a learned detector without a shipped 8x8 qam16 file runs at
    its shipped setting (ampgnn: 32x32 qam4) and the note says so; any explicit size wins."""
    import argparse

    from mimo_fast.cli.simulate import default_setting

    def resolve(det, **given):
        a = argparse.Namespace(nr=None, nt=None, mod=None, detector=det, weights=None)
        vars(a).update(given)
        return default_setting(a), (a.nr, a.nt, a.mod)

    note, setting = resolve(["ampgnn"])
    assert setting == (32, 32, "qam4") and "--nr 32 --nt 32 --mod qam4" in note
    assert resolve(["ep", "lmmse"]) == (None, (8, 8, "qam16"))
    assert resolve(["gepnet"]) == (None, (8, 8, "qam16"))
    assert resolve(["ampgnn"], nr=8) == (None, (8, 8, "qam16"))
    assert resolve(["ampgnn"], weights="x.safetensors") == (None, (8, 8, "qam16"))
