"""``mimo-fast info``: versions, build metadata and, for each backend, whether it is
available here or why not (collected by :mod:`mimo_fast.info`)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="versions, build metadata and each backend: available or why not")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from mimo_fast import info

    if args.json:
        import json

        print(json.dumps(info.collect(), indent=2, default=str))
        return 0
    return info.main()


__all__ = ["add_parser", "run"]
