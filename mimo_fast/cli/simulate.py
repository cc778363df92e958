"""``mimo-fast simulate``: Monte-Carlo SER/BER of detectors (docs/comm-detect-eval.md).

    mimo-fast simulate --nr 8 --nt 8 --mod qam16 --detector ep lmmse --snr 20 25 \
        [--channel rayleigh|kronecker --rho-rx R --rho-tx R --csi-error-var E] \
        [--min-errors 500 --max-symbols N --batch B --seed S --backend NAME] \
        [--weights PATH] [--constellation-from e2e|PATH] [--mfb] [--json out.json] [--plot out.png]

DEFAULT SETTING: 8x8 qam16 for what is left out of ``--nr/--nt/--mod``. When none of the
three is given (and no ``--weights``) and a learned detector asked for has no shipped 8x8
qam16 file, the run uses the setting its shipped file has, when all the learned detectors
asked for share one, and says so (today: ``ampgnn`` -> 32x32 qam4; AMP does not converge at
Nr = Nt with 16-QAM, so no 8x8 qam16 file is shipped for it).

``--rho-rx``/``--rho-tx`` take a value or a range ``LOW,HIGH`` (each channel draws its
own rho). Writes ``{"config": {...}, "results": [{"detector", "snr_db", "ser", "ber",
"symbol_errors", "symbols", "seconds", "bit_errors"}, ...]}`` with ``--json``.
Under ``torchrun`` (``torchrun --nproc-per-node K -m mimo_fast.cli simulate ...``) the
work is split across ranks (gloo); rank 0 prints and writes.

``--mfb`` adds the matched-filter bound (:func:`mimo_fast.eval.bounds.mfb_ser`: one user
alone on its channel, a floor no detector passes) at each SNR: a line under the table,
``"bounds": {"mfb": [{"snr_db", "ser"}, ...]}`` in the JSON and a dashed line in the plot.

``--detector e2e`` transmits with the constellation learned with its weights (the
``--mod`` is the QAM it was initialised from) while the other detectors of the run keep
``--mod``; all see the same channels, messages and noise. ``--constellation-from e2e``
(the shipped e2e weights for ``--nr/--nt/--mod``) or ``--constellation-from PATH`` (an
e2e weights file) makes every detector of the run use that learned constellation, to
transmit and to detect (e.g. ML on the learned points, to separate the constellation's
gain from the receiver's); the JSON config then records it under ``"constellation"``.

Output paths are checked before any work (docs/errors.md): missing parent folders are
created; a folder, or a ``--plot`` suffix other than .png/.pdf/.svg, is refused at once.
Files are replaced atomically (a temporary file, then a rename). With ``--json`` the
results so far are written after every SNR point (with ``"complete": false`` and
``"points_done"``, the finished point indices, until the last),
so an interrupted run keeps what it finished; ``--resume`` reads such a file back and runs
only the missing points (the same options are required: every point draws from its own
seeded generator, so the resumed run gives the numbers an uninterrupted one would).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from mimo_fast.cli import _args
from mimo_fast.cli._args import rho as _rho


def add_parser(sub) -> argparse.ArgumentParser:
    from mimo_fast.detect import NAMES

    p = sub.add_parser("simulate", help="Monte-Carlo SER/BER of detectors over SNR points",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # None = not given: resolved by default_setting() (8x8 qam16, or a learned detector's
    # shipped setting when it has no 8x8 qam16 file)
    p.add_argument("--nr", type=int, default=None, help="receive antennas (default 8; see DEFAULT SETTING)")
    p.add_argument("--nt", type=int, default=None, help="users / transmit streams (default 8)")
    p.add_argument("--mod", default=None, help="qam4 (qpsk), qam16, qam64, qam256 (default qam16)")
    p.add_argument("--detector", nargs="+", required=True, choices=NAMES, metavar="NAME",
                   help="one or more of: " + " ".join(NAMES))
    p.add_argument("--snr", nargs="+", type=float, required=True, help="SNR points in dB (docs/conventions.md definition)")
    p.add_argument("--channel", choices=("rayleigh", "kronecker"), default="rayleigh")
    p.add_argument("--rho-rx", type=_rho, default=None, help="receive correlation R or range LOW,HIGH (kronecker)")
    p.add_argument("--rho-tx", type=_rho, default=None, help="transmit correlation R or range LOW,HIGH (kronecker)")
    p.add_argument("--csi-error-var", type=float, default=0.0,
                   help="CSI error variance relative to the channel's per-entry variance (default 0)")
    p.add_argument("--min-errors", type=int, default=500, help="stop a point after this many symbol errors")
    p.add_argument("--max-symbols", type=int, default=1_000_000, help="stop a point after this many symbols")
    p.add_argument("--batch", type=int, default=1000, help="vectors per batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="op backend for every detector (reference, cpu, ...)")
    p.add_argument("--weights", default=None, help="weights file for a learned detector")
    p.add_argument("--constellation-from", default=None, metavar="e2e|PATH",
                   help="every detector transmits and detects with the learned constellation of the "
                        "shipped e2e weights (e2e) or of an e2e weights file (PATH)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write config and results as JSON (updated after every SNR point)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run whose partial results are in --json (same options): "
                        "run only the SNR points it lacks")
    p.add_argument("--plot", default=None, metavar="PATH", help="write SER vs SNR as a PNG (or .pdf, .svg)")
    p.add_argument("--mfb", action="store_true",
                   help="add the matched-filter bound (no detector can do better; mimo_fast.eval.bounds) "
                        "to the table, the JSON ('bounds') and the plot (square QAM; i.i.d. Rayleigh or "
                        "a fixed --rho-rx)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _init_distributed():
    import torch.distributed as dist
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("gloo")
        return True
    return False


def _learned_constellation(source: str, args: argparse.Namespace, qam):
    """``--constellation-from``: the learned constellation of the shipped e2e weights for
    (--nr, --nt, --mod) or of the e2e weights file ``source``."""
    from mimo_fast.detect.learned import weights as files
    path = files.find_shipped("e2e", args.nr, args.nt, qam) if source == "e2e" else source
    try:
        _, meta = files.read(path)
    except files.WeightsError as e:
        raise ValueError(f"--constellation-from: {e}") from None
    if meta["detector"] != "e2e":
        raise ValueError(f"--constellation-from: {str(path)!r} holds a {meta['detector']!r} detector, "
                         "not e2e (the one that learns a constellation)")
    if meta["config"].get("init") != qam.name:
        raise ValueError(f"--constellation-from: {str(path)!r} learned from {meta['config'].get('init')}, "
                         f"not --mod {qam.name}")
    return meta["constellation"]


def _check_outputs(args: argparse.Namespace) -> None:
    """--json / --plot checked (and their folders created) before any work."""
    if args.resume and not args.json:
        raise ValueError("--resume continues the run recorded in --json PATH: give --json")
    _args.check_json_plot(args)


def _jsonish(obj):
    return json.loads(json.dumps(obj))


def _previous(path: str, config: dict, detectors: list, resume: bool, quiet: bool = False) -> dict:
    """``{point index: [rows]}`` of the finished points in ``path`` (``--resume``), after
    checking the file records this run; ``{}`` when there is nothing to resume."""
    if not os.path.exists(path):
        if resume and not quiet:
            print(f"mimo-fast simulate: note: --resume: {path!r} does not exist yet; starting the run",
                  file=sys.stderr)
        return {}
    if not resume:
        if not quiet:
            print(f"mimo-fast simulate: note: --json {path!r} exists and will be replaced (atomically, "
                  "from the first finished SNR point; --resume continues a run it records)", file=sys.stderr)
        return {}
    try:
        with open(path) as f:
            prev = json.load(f)
        old_config, rows, points = prev["config"], prev["results"], prev.get("points_done")
        if points is None:       # a complete run's file (only partial files list their points)
            points = list(range(len(old_config["snr_db"])))
        points = [int(i) for i in points]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--resume: {path!r} is not a mimo-fast simulate result file "
                         f"({type(e).__name__}: {e})") from None
    now = _jsonish(config)
    diff = [k for k in sorted(set(now) | set(old_config)) if now.get(k) != old_config.get(k)]
    if diff:
        shown = "; ".join(f"{k}: file {old_config.get(k)!r}, now {now.get(k)!r}" for k in diff)
        raise ValueError(f"--resume: {path!r} records a different run ({shown}); resume with the same "
                         "options, or write to another --json")
    done = {i: [] for i in points}
    for name in detectors:
        mine = [r for r in rows if isinstance(r, dict) and r.get("detector") == name]
        if len(mine) != len(points):
            raise ValueError(f"--resume: {path!r} has {len(mine)} result(s) for {name} but records "
                             f"{len(points)} finished point(s); it is not a file this command wrote")
        for i, r in zip(sorted(points), mine):
            done[i].append(r)
    return done


DEFAULT_SETTING = (8, 8, "qam16")


def default_setting(args: argparse.Namespace):
    """Fill ``--nr/--nt/--mod`` left out. The default is 8x8 qam16, except when none of the
    three is given, ``--weights`` is not, and the learned detectors asked for have no shipped
    8x8 qam16 file but share one shipped setting: then that setting (e.g. ``ampgnn`` alone runs
    at 32x32 qam4, where its file is). Returns a note saying so, or None."""
    given = (args.nr, args.nt, args.mod)
    chosen = None
    if given == (None, None, None) and not args.weights:
        chosen = _shipped_setting(args.detector)
    nr, nt, mod = chosen or DEFAULT_SETTING
    args.nr = nr if args.nr is None else args.nr
    args.nt = nt if args.nt is None else args.nt
    args.mod = mod if args.mod is None else args.mod
    if chosen:
        return (f"mimo-fast simulate: no --nr/--nt/--mod given and {', '.join(_learned(args.detector))} "
                f"has no shipped 8x8 qam16 weights: running at its shipped setting "
                f"--nr {nr} --nt {nt} --mod {mod}")
    return None


def _learned(names):
    from mimo_fast import detect
    from mimo_fast.detect.learned import LearnedDetector

    return [d for d in names if d in detect.REGISTRY and issubclass(detect.REGISTRY[d], LearnedDetector)]


def _shipped_setting(names):
    """The one (nr, nt, mod) at which every learned detector in ``names`` has a shipped file,
    when some of them lack an 8x8 qam16 file; None otherwise."""
    from mimo_fast.detect.learned import weights as files

    learned = _learned(names)
    settings = []
    for name in learned:
        mine = set()
        for f in files.shipped():
            stem = f.removesuffix(".safetensors")
            if not stem.startswith(name + "_"):
                continue
            try:
                size, mod = stem[len(name) + 1:].split("_", 1)
                nr, nt = (int(v) for v in size.split("x"))
            except ValueError:
                continue
            mine.add((nr, nt, mod))
        settings.append(mine)
    def serves_default(name):          # a file for more users serves fewer (masks)
        try:
            files.find_shipped(name, DEFAULT_SETTING[0], DEFAULT_SETTING[1], DEFAULT_SETTING[2])
            return True
        except files.WeightsError:
            return False

    if not learned or all(serves_default(n) for n in learned):
        return None
    common = set.intersection(*settings)
    return next(iter(common)) if len(common) == 1 else None


def run(args: argparse.Namespace) -> int:
    from mimo_fast import comm, detect, outputs
    from mimo_fast.eval import SimConfig, format_table, plot, simulate
    from mimo_fast.eval.montecarlo import check_snr

    def fail(msg: str) -> int:
        return _args.fail("simulate", msg)

    try:
        # everything that can be refused is refused here, before any Monte-Carlo work
        args.snr = check_snr(args.snr, "--snr")
        _check_outputs(args)
    except ValueError as e:
        return fail(str(e))
    note = default_setting(args)
    if note:
        print(note, file=sys.stderr)
    try:
        constellation = qam = comm.from_name(args.mod)
    except ValueError as e:
        return fail(str(e))
    if args.constellation_from is not None:
        try:
            constellation = _learned_constellation(args.constellation_from, args, qam)
        except ValueError as e:
            return fail(str(e))
    learned = [d for d in args.detector if d not in detect.REGISTRY]
    if learned:
        return fail(f"detector(s) {', '.join(learned)}: learned detectors are not available in this "
                    f"version of mimo_fast (no shipped weights: none are shipped yet"
                    f"{'; --weights cannot load them either' if args.weights else ''}). "
                    f"Available: {' '.join(detect.REGISTRY)}")
    from mimo_fast.detect.learned import LearnedDetector
    trained = [d for d in args.detector if issubclass(detect.REGISTRY[d], LearnedDetector)]
    if args.weights and len(trained) != 1:
        return fail(f"--weights needs exactly one learned detector, got {len(trained)}")
    cfg = SimConfig(nr=args.nr, nt=args.nt, mod=qam.name, channel=args.channel,
                    rho_rx=args.rho_rx, rho_tx=args.rho_tx, csi_error_var=args.csi_error_var,
                    min_errors=args.min_errors, max_symbols=args.max_symbols, batch=args.batch,
                    seed=args.seed, backend=args.backend)
    if args.channel == "rayleigh" and (args.rho_rx is not None or args.rho_tx is not None):
        return fail("--rho-rx/--rho-tx need --channel kronecker")
    try:
        cfg.validate()
        bounds = {}
        if args.mfb:
            from mimo_fast.eval.bounds import mfb_ser
            bounds["mfb"] = [{"snr_db": s, "ser": float(v)} for s, v in
                             zip(args.snr, mfb_ser(args.snr, args.nr, args.nt, constellation, rho_rx=args.rho_rx))]
        # e2e is asked for by the QAM it started from; it transmits its own points (eval)
        own = {n for n in args.detector if getattr(detect.REGISTRY[n], "transmits_own_constellation", False)}
        dets = {name: detect.make(name, qam if name in own else constellation, backend=args.backend,
                                  **({"nr": args.nr, "nt": args.nt, "weights": args.weights} if name in trained else {}))
                for name in dict.fromkeys(args.detector)}
        started = _init_distributed()
        import torch.distributed as dist
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        config = dict(cfg.to_dict(), snr_db=list(args.snr), detectors=list(dets), world_size=world)
        if args.weights:
            config["weights"] = str(args.weights)
        if args.constellation_from is not None:
            config["constellation"] = {"from": args.constellation_from, "name": constellation.name,
                                       "points": [[float(p.real), float(p.imag)] for p in constellation.points]}
        done = _previous(args.json, config, list(dets), args.resume, quiet=rank != 0) if args.json else {}
        if done and rank == 0:
            print(f"mimo-fast simulate: resuming {args.json!r}: {len(done)} of {len(args.snr)} SNR point(s) "
                  "already done", file=sys.stderr)

        def document(results: list, points: list) -> dict:
            # a partial file says so ("complete": false) and lists its finished points; the
            # final file keeps the schema of the module doc
            partial = {"complete": False, "points_done": points} if len(points) < len(args.snr) else {}
            return {"config": config, "results": results, **partial, **({"bounds": bounds} if bounds else {})}

        def save_partial(results: list, points: list) -> None:
            if rank == 0 and args.json:
                outputs.write_json(args.json, document(results, points))

        try:
            results = simulate(dets, constellation, cfg, args.snr, progress=not args.no_progress,
                               done=done, on_point=save_partial)
        except KeyboardInterrupt:
            if args.json and rank == 0:
                print(f"mimo-fast simulate: interrupted; the finished SNR points are in {args.json!r}: "
                      "the same command with --resume continues", file=sys.stderr)
            return 130
    except ValueError as e:
        return fail(str(e))
    if rank == 0:
        print(f"{cfg.nr}x{cfg.nt} {constellation.name} {cfg.channel}, seed {cfg.seed}"
              + (f", {world} ranks" if world > 1 else ""))
        print(format_table(results))
        if bounds:
            print("matched-filter bound: " + ", ".join(f"{b['snr_db']:g} dB {b['ser']:.4e}" for b in bounds["mfb"]))
        if args.json:
            outputs.write_json(args.json, document(results, list(range(len(args.snr)))))
        if args.plot:
            plot(results, args.plot, f"{cfg.nr}x{cfg.nt} {constellation.name} {cfg.channel}", bounds=bounds)
    if started:
        from mimo_fast.train.dist import close_group
        close_group()
    return 0


__all__ = ["add_parser", "run"]
