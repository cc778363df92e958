"""The ``mimo-fast`` command (DESIGN.md, "The mimo-fast command").

Each subcommand lives in its own module and registers its parser here; the modules
are imported lazily so ``mimo-fast info`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _cmd_info(args: argparse.Namespace) -> int:
    from mimo_fast import info

    if args.json:
        import json

        print(json.dumps(info.collect(), indent=2, default=str))
        return 0
    return info.main()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimo-fast", description="Fast learned and classical MIMO detection.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="versions, build metadata and each backend: available or why not")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.set_defaults(func=_cmd_info)
    from mimo_fast.bench.run import add_parser as add_bench
    from mimo_fast.simulate import add_parser as add_simulate

    add_simulate(sub)
    add_bench(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
