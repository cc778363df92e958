"""``mimo-fast coded``: coded BER/BLER of detectors over Sionna's 5G LDPC code.

The engine is :mod:`mimo_fast.eval.coded` (:func:`~mimo_fast.eval.coded.run_coded`); this
module is its command: arguments, output checks, the table, JSON and plot. Needs the
``[sionna]`` extra.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from mimo_fast import comm
from mimo_fast.cli import _args as _cli_args
from mimo_fast.eval.coded import CHANNELS, LLR_METHODS, CodedConfig, _sionna, format_table, plot, run_coded
from mimo_fast.eval.montecarlo import check_snr

def add_parser(sub) -> argparse.ArgumentParser:
    from mimo_fast.cli._args import rho as _rho
    from mimo_fast.detect import NAMES

    d = CodedConfig()
    p = sub.add_parser("coded", help="coded BER/BLER of detectors over Sionna's 5G LDPC code",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nr", type=int, default=d.nr, help="receive antennas (default 8)")
    p.add_argument("--nt", type=int, default=d.nt, help="users / streams, one codeword each (default 8)")
    p.add_argument("--mod", default=d.mod, help="qam4 (qpsk), qam16, qam64, qam256 (default qam16)")
    p.add_argument("--detector", nargs="+", required=True, choices=NAMES, metavar="NAME",
                   help="one or more of: " + " ".join(NAMES))
    p.add_argument("--snr", nargs="+", type=float, required=True, help="SNR points in dB (mimo_fast's definition)")
    p.add_argument("--k", type=int, default=d.k, help=f"information bits per codeword (default {d.k})")
    p.add_argument("--n", type=int, default=d.n, help=f"codeword bits, a multiple of bits/symbol (default {d.n})")
    p.add_argument("--llr", choices=LLR_METHODS, default=d.llr, help="bit LLRs from the detector's logits")
    p.add_argument("--decoder-iterations", type=int, default=d.decoder_iterations)
    p.add_argument("--channel", choices=CHANNELS, default=d.channel)
    p.add_argument("--rho-rx", type=_rho, default=None, help="receive correlation R or LOW,HIGH (kronecker)")
    p.add_argument("--rho-tx", type=_rho, default=None, help="transmit correlation R or LOW,HIGH (kronecker)")
    p.add_argument("--csi-error-var", type=float, default=0.0, help="CSI error variance (relative, as simulate)")
    p.add_argument("--tdl-model", default=d.tdl_model, help="TR 38.901 TDL model: A..E, A30, B100, C300")
    p.add_argument("--delay-spread", type=float, default=d.delay_spread, help="TDL delay spread in s (1e-7)")
    p.add_argument("--fft-size", type=int, default=d.fft_size, help="TDL grid subcarriers (14 symbols each)")
    p.add_argument("--min-block-errors", type=int, default=d.min_block_errors)
    p.add_argument("--max-blocks", type=int, default=d.max_blocks)
    p.add_argument("--batch", type=int, default=d.batch, help="frames (Nt codewords each) per batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="op backend for every detector")
    p.add_argument("--weights", default=None, help="weights file for a learned detector")
    p.add_argument("--json", default=None, metavar="PATH", help="write config and results (after every point)")
    p.add_argument("--plot", default=None, metavar="PATH", help="BER/BLER vs SNR as .png, .pdf or .svg")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _check_outputs(args) -> None:
    _cli_args.check_json_plot(args)


def run(args: argparse.Namespace) -> int:
    from mimo_fast import detect, outputs
    from mimo_fast.cli._args import fail as _fail
    from mimo_fast.detect.learned import LearnedDetector

    def fail(msg: str) -> int:
        return _fail("coded", msg)

    try:
        args.snr = check_snr(args.snr, "--snr")
        _check_outputs(args)
        qam = comm.from_name(args.mod)
        cfg = CodedConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CodedConfig)
                             if f.name != "mod"}, mod=qam.name)
        cfg.validate(qam)
        _sionna()
        trained = [n for n in args.detector if issubclass(detect.REGISTRY[n], LearnedDetector)]
        if args.weights and len(trained) != 1:
            return fail(f"--weights needs exactly one learned detector, got {len(trained)}")
        dets = {n: detect.make(n, qam, backend=args.backend,
                               **({"nr": args.nr, "nt": args.nt, "weights": args.weights} if n in trained else {}))
                for n in dict.fromkeys(args.detector)}
        config = dict(cfg.to_dict(), snr_db=list(args.snr), detectors=list(dets), code="5G NR LDPC (Sionna "
                      f"LDPC5GEncoder/LDPC5GDecoder, boxplus-phi), rate {cfg.k / cfg.n:.4g}")
        if args.weights:
            config["weights"] = str(args.weights)

        def save(results: list, points: list) -> None:
            if args.json:
                partial = {"complete": False, "points_done": points} if len(points) < len(args.snr) else {}
                outputs.write_json(args.json, {"config": config, "results": results, **partial})

        results = run_coded(dets, qam, cfg, args.snr, progress=not args.no_progress, on_point=save)
    except (ValueError, ImportError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        if args.json:
            print(f"mimo-fast coded: interrupted; the finished SNR points are in {args.json!r}", file=sys.stderr)
        return 130
    print(f"{cfg.nr}x{cfg.nt} {qam.name} {cfg.channel}, LDPC k={cfg.k} n={cfg.n}, llr {cfg.llr}, seed {cfg.seed}")
    print(format_table(results))
    if args.plot:
        plot(results, args.plot, f"{cfg.nr}x{cfg.nt} {qam.name} {cfg.channel}, LDPC ({cfg.n},{cfg.k})")
    return 0


__all__ = ["add_parser", "run"]
