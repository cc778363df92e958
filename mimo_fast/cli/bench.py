"""``mimo-fast bench``: time the ops against plain PyTorch and print ratios (the timing is
:mod:`mimo_fast.bench.timing`)."""
from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    from mimo_fast.bench.timing import OPS

    p = sub.add_parser("bench", help="time the ops against plain PyTorch and print ratios")
    p.add_argument("--op", nargs="+", choices=list(OPS), default=list(OPS))
    p.add_argument("--shape", nargs="+", help="only these shape names (see mimo_fast.bench.shapes)")
    p.add_argument("--quick", action="store_true", help="small shapes (a smoke run of a few seconds)")
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise SystemExit("mimo-fast bench: --repeat must be >= 1")
    import torch

    from mimo_fast import info, outputs
    from mimo_fast.bench import timing
    if args.json:
        try:   # checked (folder created) before any timing; written atomically at the end
            outputs.check_file(args.json, "--json")
        except outputs.OutputPathError as exc:
            raise SystemExit(f"mimo-fast bench: error: {exc}") from None

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ratios are against the first row of each shape")
    rows = timing.time_ops(args.op, quick=args.quick, backward=args.backward, repeat=args.repeat, device=args.device,
                           shape_names=args.shape)
    if args.json:
        outputs.write_text(args.json, json.dumps({"machine": info.collect(), "rows": rows}, indent=2,
                                                 default=str) + "\n")
    return 1 if any(r["check"] != "ok" for r in rows) else 0


__all__ = ["add_parser", "run"]
