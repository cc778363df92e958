"""The `mimo-fast` command as a package: `--version`, the list of subcommand modules (one
entry adds a subcommand), the shared argument types, and the old import paths (deprecated
shims that forward to the new homes)."""
import argparse
import importlib
import subprocess
import sys
import types

import pytest

from mimo_fast import cli
from mimo_fast._version import __version__
from mimo_fast.cli import _args


def test_version_prints_the_version_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"mimo-fast {__version__}\n"
    # `python -m mimo_fast.cli` (what torchrun runs) is the same command
    r = subprocess.run([sys.executable, "-m", "mimo_fast.cli", "--version"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout == f"mimo-fast {__version__}\n", r.stderr


def test_each_subcommand_is_a_module_with_add_parser_and_run():
    parser = cli.build_parser()
    assert list(parser.subcommands) == ["info", "simulate", "bench", "precode", "train", "coded"]
    for name, (module, sub) in parser.subcommands.items():
        assert module.__name__ == f"mimo_fast.cli.{name}" and callable(module.run)
        assert sub.get_default("func") is module.run


def test_one_entry_in_commands_adds_a_subcommand(monkeypatch, capsys):
    """The hook for another subcommand (e.g. `coded`): a module with add_parser/run, one line."""
    fake = types.ModuleType("fake_cli_command")

    def add_parser(sub):
        p = sub.add_parser("hello", help="say hello")
        p.add_argument("--times", type=int, default=1)
        return p                                        # no set_defaults(func=...): main finds run

    def run(args):
        print("hello " * args.times)
        return 3

    fake.add_parser, fake.run = add_parser, run
    monkeypatch.setitem(sys.modules, "fake_cli_command", fake)
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + ["fake_cli_command"])
    assert cli.main(["hello", "--times", "2"]) == 3
    assert capsys.readouterr().out.strip() == "hello hello"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "say hello" in capsys.readouterr().out


def test_shared_argument_types():
    assert _args.rho("0.5") == 0.5 and _args.rho("0.1,0.9") == (0.1, 0.9)
    assert _args.snr_range("8:10:30.5") == (8, 10.0, 30.5)
    assert _args.snr_table([(2, 0.0, 5.0), (2, 1.0, 6.0), (4, 3.0, 9.0)]) == {2: (1.0, 6.0), 4: (3.0, 9.0)}
    assert _args.snr_table(None) is None
    assert _args.model_option("layers=3") == ("layers", 3)
    assert _args.model_option("out-act=relu") == ("out_act", "relu")
    for fn, bad in ((_args.rho, "1,2,3"), (_args.snr_range, "8:10"), (_args.snr_range, "x:1:2"),
                    (_args.model_option, "layers"), (_args.model_option, "=3")):
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            fn(bad)


def test_a_bad_rho_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["simulate", "--detector", "mf", "--snr", "10", "--channel", "kronecker", "--rho-rx", "1,2,3"])
    assert exc.value.code == 2 and "expected R or LOW,HIGH" in capsys.readouterr().err


@pytest.mark.parametrize("old, name, new", [
    ("mimo_fast.simulate", "add_parser", "mimo_fast.cli.simulate:add_parser"),
    ("mimo_fast.simulate", "run", "mimo_fast.cli.simulate:run"),
    ("mimo_fast.simulate", "_rho", "mimo_fast.cli._args:rho"),
    ("mimo_fast.precode.cli", "add_parser", "mimo_fast.cli.precode:add_parser"),
    ("mimo_fast.precode.cli", "run", "mimo_fast.cli.precode:run"),
    ("mimo_fast.precode.cli", "METHODS", "mimo_fast.cli.precode:METHODS"),
    ("mimo_fast.bench.run", "run", "mimo_fast.bench.timing:time_ops"),
    ("mimo_fast.bench.run", "time_call", "mimo_fast.bench.timing:time_call"),
    ("mimo_fast.bench.run", "OPS", "mimo_fast.bench.timing:OPS"),
    ("mimo_fast.bench.run", "add_parser", "mimo_fast.cli.bench:add_parser"),
    ("mimo_fast.bench.run", "main", "mimo_fast.cli.bench:run"),
    ("mimo_fast.nn.gnn_tx", "GNNTx", "mimo_fast.detect.learned.gnn_tx:GNNTx"),
    ("mimo_fast.nn.gnn_tx", "distance_edges", "mimo_fast.detect.learned.gnn_tx:distance_edges"),
    ("mimo_fast.cli", "TRAIN_HELP", "mimo_fast.cli.train:HELP"),
    ("mimo_fast.cli", "_model_option", "mimo_fast.cli._args:model_option"),
])
def test_old_import_paths_warn_and_forward(old, name, new):
    module, _, attr = new.partition(":")
    want = getattr(importlib.import_module(module), attr)
    with pytest.warns(DeprecationWarning, match=f"{module}.{attr}"):
        got = getattr(importlib.import_module(old), name)
    assert got is want
    with pytest.raises(AttributeError, match="no attribute"):
        getattr(importlib.import_module(old), "no_such_name")


def test_from_import_of_an_old_name_warns():
    with pytest.warns(DeprecationWarning, match="mimo_fast.detect.learned.gnn_tx.GNNTx"):
        from mimo_fast.nn.gnn_tx import GNNTx
    from mimo_fast.detect.learned.gnn_tx import GNNTx as new
    assert GNNTx is new


def test_precode_train_main_is_deprecated_and_still_trains(tmp_path):
    from mimo_fast.precode import train as ptrain
    args = cli.build_parser().parse_args(["train", "model-gnn", "--n", "4", "--k", "2", "--samples", "16",
                                          "--epochs", "1", "--batch", "8", "--widths", "4", "--out",
                                          str(tmp_path / "run"), "--no-progress"])
    with pytest.warns(DeprecationWarning, match="mimo_fast.cli.train.run_precoder"):
        assert ptrain.main(args, "mimo-fast train model-gnn ...") == 0
    assert (tmp_path / "run" / "best.safetensors").is_file()
