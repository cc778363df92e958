"""The ``mimo-fast`` command.

One module per subcommand, listed in :data:`COMMANDS` in the order ``mimo-fast --help``
shows them; each has ``add_parser(sub)`` (adds its parser to the subparsers ``sub``) and
``run(args) -> exit code``. Argument types shared by several are in
:mod:`mimo_fast.cli._args`. Heavy imports happen inside ``run``, so ``mimo-fast info``
stays fast. ``python -m mimo_fast.cli`` (and ``torchrun ... -m mimo_fast.cli``) runs
:func:`main`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from mimo_fast._deprecated import forward

#: the subcommand modules; a new subcommand is one more entry (its module's
#: ``add_parser(sub)`` and ``run(args)``)
COMMANDS = [
    "mimo_fast.cli.info",
    "mimo_fast.cli.simulate",
    "mimo_fast.cli.bench",
    "mimo_fast.cli.precode",
    "mimo_fast.cli.train",
    "mimo_fast.cli.coded",
]


def build_parser() -> argparse.ArgumentParser:
    from mimo_fast._version import __version__

    parser = argparse.ArgumentParser(prog="mimo-fast", description="Fast learned and classical MIMO detection.")
    parser.add_argument("--version", action="version", version=f"mimo-fast {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    #: subcommand name -> (its module, its parser)
    parser.subcommands = {}
    for name in COMMANDS:
        module = importlib.import_module(name)
        before = set(sub.choices)
        module.add_parser(sub)
        for command in sorted(set(sub.choices) - before):
            p = sub.choices[command]
            if p.get_default("func") is None:
                p.set_defaults(func=module.run)
            parser.subcommands[command] = (module, p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module, sub = parser.subcommands[args.command]
    # a subcommand may turn some options into the defaults of the others (train --preset):
    # the explicit options still win, so parse again with those defaults
    defaults = getattr(module, "preset_defaults", None)
    if defaults is not None:
        try:
            new = defaults(args)
        except ValueError as e:
            parser.error(str(e))
        if new:
            sub.set_defaults(**new)
            args = parser.parse_args(argv)
    args._argv = list(argv) if argv is not None else sys.argv[1:]   # recorded by train
    return int(args.func(args) or 0)


# names of the single-module command of earlier versions
__getattr__ = forward(__name__, {
    "TRAIN_HELP": "mimo_fast.cli.train:HELP",
    "_cmd_info": "mimo_fast.cli.info:run",
    "_cmd_train": "mimo_fast.cli.train:run",
    "_add_train": "mimo_fast.cli.train:add_parser",
    "_init_weights": "mimo_fast.cli.train:init_weights",
    "_model_option": "mimo_fast.cli._args:model_option",
    "_snr_range": "mimo_fast.cli._args:snr_range",
    "_snr_table": "mimo_fast.cli._args:snr_table",
})

__all__ = ["main", "build_parser", "COMMANDS"]
