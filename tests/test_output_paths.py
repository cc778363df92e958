"""Issue 18: output paths are checked before any work, written atomically, and a long
``simulate`` keeps (and can resume from) the SNR points it finished."""
import json
import os

import pytest

from mimo_fast import cli, outputs
from mimo_fast.eval import montecarlo

SMALL = ["--nr", "2", "--nt", "2", "--mod", "qam4", "--min-errors", "20", "--max-symbols", "400",
         "--batch", "100", "--no-progress", "--detector", "lmmse", "zf"]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any Monte-Carlo point runs."""
    def boom(*a, **k):
        raise AssertionError("Monte-Carlo work ran before the output path was refused")
    monkeypatch.setattr(montecarlo, "run_point", boom)


# --- simulate: checked before any work -----------------------------------------------------

def test_simulate_creates_missing_json_folders(tmp_path):
    out = tmp_path / "a" / "b" / "out.json"          # was FileNotFoundError after the whole run
    assert cli.main(["simulate", *SMALL, "--snr", "5", "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())) == {"config", "results"}


@pytest.mark.parametrize("opt,path,match", [
    ("--json", "{tmp}", "is a folder"),                       # was IsADirectoryError after the run
    ("--json", "{tmp}/sub/", "is a folder"),
    ("--plot", "{tmp}/p.txt", r"unsupported suffix '\.txt'"),  # was a matplotlib traceback after the run
    ("--plot", "{tmp}/p", "unsupported suffix"),
    ("--json", "{tmp}/file.json/x.json", "parent of it is a file"),
])
def test_simulate_refuses_bad_output_paths_before_work(tmp_path, capsys, no_work, opt, path, match):
    (tmp_path / "file.json").write_text("{}")
    rc = cli.main(["simulate", *SMALL, "--snr", "5", opt, path.format(tmp=tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err and opt in err
    import re
    assert re.search(match, err)


def test_simulate_replaces_an_existing_file_atomically_and_says_so(tmp_path, capsys):
    out = tmp_path / "out.json"
    out.write_text("old")
    assert cli.main(["simulate", *SMALL, "--snr", "5", "--json", str(out)]) == 0
    assert "will be replaced" in capsys.readouterr().err
    assert json.loads(out.read_text())["results"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]      # no temporary left


def test_plot_is_written_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    assert cli.main(["simulate", *SMALL, "--snr", "5", "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and len(list(tmp_path.iterdir())) == 1


# --- simulate: partial results and --resume ------------------------------------------------

def _strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_partial_results_survive_an_interrupt_and_resume_continues(tmp_path, monkeypatch, capsys):
    snr = ["0", "4", "8"]
    full = tmp_path / "full.json"
    assert cli.main(["simulate", *SMALL, "--snr", *snr, "--json", str(full)]) == 0
    expected = json.loads(full.read_text())

    out = tmp_path / "part.json"
    real = montecarlo.run_point

    def interrupted(dets, c, cfg, s, i, progress=True):
        if i == 2:
            raise KeyboardInterrupt
        return real(dets, c, cfg, s, i, progress)

    monkeypatch.setattr(montecarlo, "run_point", interrupted)
    try:
        rc = cli.main(["simulate", *SMALL, "--snr", *snr, "--json", str(out)])
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped simulate (no partial results, no --resume hint)")
    assert rc == 130
    assert "--resume continues" in capsys.readouterr().err
    part = json.loads(out.read_text())
    assert part["complete"] is False and part["points_done"] == [0, 1]
    assert _strip(part["results"]) == _strip([r for r in expected["results"] if r["snr_db"] != 8.0])

    spy = []
    monkeypatch.setattr(montecarlo, "run_point", lambda *a, **k: spy.append(a[4]) or real(*a, **k))
    assert cli.main(["simulate", *SMALL, "--snr", *snr, "--json", str(out), "--resume"]) == 0
    assert spy == [2]                                   # only the missing point ran
    done = json.loads(out.read_text())
    assert set(done) == {"config", "results"}           # complete: the usual schema
    assert _strip(done["results"]) == _strip(expected["results"])   # same numbers as uninterrupted


def test_resume_refuses_another_run(tmp_path, capsys, no_work):
    out = tmp_path / "o.json"
    out.write_text(json.dumps({"config": {"nr": 4}, "results": [], "complete": False, "points_done": []}))
    assert cli.main(["simulate", *SMALL, "--snr", "5", "--json", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "records a different run" in err and "nr: file 4, now 2" in err
    out.write_text("not json")
    assert cli.main(["simulate", *SMALL, "--snr", "5", "--json", str(out), "--resume"]) == 2
    assert "not a mimo-fast simulate result file" in capsys.readouterr().err
    assert cli.main(["simulate", *SMALL, "--snr", "5", "--resume"]) == 2
    assert "give --json" in capsys.readouterr().err


# --- the helper ---------------------------------------------------------------------------

def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    p = tmp_path / "r.json"
    outputs.write_json(p, {"a": 1})
    with pytest.raises(ValueError):                     # strict JSON: no NaN / Infinity tokens
        outputs.write_json(p, {"a": float("inf")})
    assert json.loads(p.read_text()) == {"a": 1} and len(list(tmp_path.iterdir())) == 1

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError):
        outputs.atomic_write(p, crash)
    assert json.loads(p.read_text()) == {"a": 1} and len(list(tmp_path.iterdir())) == 1


def test_check_dir(tmp_path):
    assert outputs.check_dir(tmp_path / "x" / "y", "--out").is_dir()
    (tmp_path / "f").write_text("")
    with pytest.raises(outputs.OutputPathError, match="--out .* is a file"):
        outputs.check_dir(tmp_path / "f", "--out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(outputs.OutputPathError, match="not writable"):
            outputs.check_file(ro / "o.json", "--json")
    finally:
        ro.chmod(0o700)


# --- train, precode, bench -----------------------------------------------------------------

def test_train_refuses_a_file_as_out_before_work(tmp_path, capsys):
    f = tmp_path / "run"
    f.write_text("")
    assert cli.main(["train", "gepnet", "--out", str(f), "--steps", "1"]) == 2
    assert "--out" in capsys.readouterr().err
    assert cli.main(["train", "model-gnn", "--out", str(f)]) == 2


def test_precode_checks_json_first(tmp_path, capsys):
    assert cli.main(["precode", "--n", "4", "--k", "2", "--snr", "10", "--method", "zf",
                     "--samples", "2", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    out = tmp_path / "new" / "p.json"
    assert cli.main(["precode", "--n", "4", "--k", "2", "--snr", "10", "--method", "zf",
                     "--samples", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["results"]


def test_bench_checks_json_first(tmp_path, monkeypatch):
    from mimo_fast.bench import timing
    monkeypatch.setattr(timing, "time_ops", lambda *a, **k: pytest.fail("timed before checking --json"))
    with pytest.raises(SystemExit, match="is a folder"):
        cli.main(["bench", "--quick", "--repeat", "1", "--json", str(tmp_path)])
