"""``mimo-fast train MODEL``: train a learned detector (:mod:`mimo_fast.train`) or precoder
(:mod:`mimo_fast.precode.train`) on the same loop: checkpoints, ``--resume``, progress bar,
stop on SIGINT/SIGTERM, the same run-folder files (docs/training.md, docs/precoding.md)."""
from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Optional

from mimo_fast.cli import _args
from mimo_fast.cli._args import model_option, rho, snr_range, snr_table

#: the precoders ``mimo-fast train`` trains (the other models are the learned detectors)
PRECODERS = ("model-gnn", "vanilla-gnn")

_fail = partial(_args.fail, "train")


HELP = """Train a learned detector on fresh random data (docs/training.md).

Writes DIR/last.safetensors + DIR/last.state.pt (a checkpoint every --val-every steps and at
the end), DIR/best.safetensors (best validation metric) and DIR/log.jsonl (one line per
validation: step, loss, lr, val_loss, val_ser, wall). --resume continues the run in DIR
(same options; --steps may grow) and gives the parameters an uninterrupted run would.
Data-parallel: torchrun --nproc-per-node K -m mimo_fast.cli train ... (--batch is per rank).
"""


def add_parser(sub) -> argparse.ArgumentParser:
    from mimo_fast.detect import REGISTRY
    from mimo_fast.detect.learned import LearnedDetector

    models = [n for n, cls in REGISTRY.items() if issubclass(cls, LearnedDetector)]
    models += list(PRECODERS)   # precoders: mimo_fast.precode.train
    p = sub.add_parser("train", help="train a learned detector (checkpoints, --resume, torchrun)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=models, metavar="MODEL", help="one of: " + " ".join(models))
    from mimo_fast.train.presets import PRESETS
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="a published training recipe as defaults (explicit options win): "
                        + ", ".join(sorted(PRESETS)) + "; 'published' = the model's own (docs/training.md)")
    p.add_argument("--nr", type=int, default=8, help="receive antennas (default 8)")
    p.add_argument("--nt", type=int, default=8, help="users: the model's maximum (default 8)")
    p.add_argument("--nt-min", type=int, default=None,
                   help="fewest users in a sample (default --nt); the rest are masked")
    p.add_argument("--mod", default="qam16", help="qam4, qam16, qam64, qam256 (default qam16)")
    p.add_argument("--snr-min", type=float, default=10.0, help="SNR range in dB, uniform per sample")
    p.add_argument("--snr-max", type=float, default=20.0)
    p.add_argument("--channel", choices=("rayleigh", "kronecker"), default="rayleigh")
    p.add_argument("--rho-rx", type=rho, default=None, help="kronecker receive correlation R or LOW,HIGH")
    p.add_argument("--rho-tx", type=rho, default=None, help="kronecker transmit correlation R or LOW,HIGH")
    p.add_argument("--nt-dist", choices=("uniform", "triangular", "proportional"), default="uniform",
                   help="law of the user count in [--nt-min, --nt]: uniform, triangular with mode --nt, "
                        "or proportional (P(k) ∝ k)")
    p.add_argument("--snr-range", type=snr_range, action="append", default=None, metavar="USERS:LOW:HIGH",
                   help="SNR range in dB for samples with USERS users (repeat for each user count; "
                        "replaces --snr-min/--snr-max)")
    p.add_argument("--train-set", type=int, default=None, metavar="N",
                   help="train on a fixed set of N samples, reshuffled each epoch (default: fresh data)")
    p.add_argument("--nt-step", type=int, default=1, help="user counts --nt-min, --nt-min + N, ... (default 1)")
    p.add_argument("--snr-per-user", type=float, default=0.0,
                   help="dB added to the SNR range per user: + N (k - --nt) for k users (default 0)")
    p.add_argument("--rho-dist", choices=("uniform", "triangular"), default="uniform",
                   help="law of rho in a --rho-rx/--rho-tx range: uniform, or triangular with mode at HIGH")
    p.add_argument("--val-nt", type=int, nargs="+", default=None,
                   help="validate on these user counts only (default: the training law)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps in total (default 1000)")
    p.add_argument("--batch", type=int, default=256, help="samples per step and rank (default 256)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--lr-factor", type=float, default=0.5, help="plateau: lr multiplier (default 0.5)")
    p.add_argument("--min-lr", type=float, default=0.0, help="plateau: lowest lr (default 0)")
    p.add_argument("--plateau-metric", choices=("loss", "ser"), default="loss",
                   help="validation metric for the plateau scheduler and best.safetensors")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="parameters and data (default float32)")
    p.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                   help="clip the global gradient norm to NORM before each step (default: no clipping)")
    p.add_argument("--val-every", type=int, default=100, help="validate and checkpoint every N steps")
    p.add_argument("--val-batches", type=int, default=4, help="validation batches (of --batch) per rank")
    p.add_argument("--patience", type=int, default=5, help="plateau: validations without improvement")
    p.add_argument("--plateau-every", type=int, default=1, metavar="N",
                   help="plateau: the scheduler sees every N-th validation only, the 1st, (N+1)-th, ... "
                        "(default 1; the GEPNet recipe: 50 epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, log, weights)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--keep-every", type=int, default=None, metavar="N",
                   help="also keep the model every N steps as DIR/snapshots/step_*.safetensors (learning curves)")
    p.add_argument("--init", default=None, metavar="PATH|shipped",
                   help="start a new run from the parameters of a weights file of the same model "
                        "(fine-tuning; its constructor options are kept, --model-option overrides "
                        "those that leave the parameter shapes alone); 'shipped' = the shipped file")
    p.add_argument("--model-option", type=model_option, action="append", default=[], metavar="KEY=VALUE",
                   help="constructor option of the model (repeatable; VALUE read as JSON when it parses)")
    p.add_argument("--backend", default=None, help="op backend for the model (reference, cpu, ...)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("precoder options (model-gnn, vanilla-gnn; docs/precoding.md)")
    g.add_argument("--n", type=int, default=8, help="base-station antennas N (default 8)")
    g.add_argument("--k", type=int, default=4, help="users K, or the largest K with --k-dist exp (default 4)")
    g.add_argument("--k-dist", choices=("fixed", "exp"), default="fixed", help="K per sample (default fixed)")
    g.add_argument("--k-mean", type=float, default=4.0, help="mean of K for --k-dist exp (default 4)")
    g.add_argument("--snr", type=float, default=10.0, help="SNR = P_max / sigma0^2 in dB (default 10)")
    g.add_argument("--objective", choices=("se", "ee"), default="se", help="se (sum SE, P1) or ee (EE with R_min)")
    g.add_argument("--r-min", type=float, default=3.0, help="--objective ee: per-user R_min, bit/s/Hz (default 3)")
    g.add_argument("--dual-lr", type=float, default=0.1, help="--objective ee: dual step size (default 0.1)")
    g.add_argument("--cells", type=int, default=1, help="cells M: > 1 trains the multi-cell model-gnn (P2)")
    g.add_argument("--inter-cell-gain", type=float, default=1.0, help="--cells > 1: inter-cell link power (default 1)")
    g.add_argument("--samples", type=int, default=1000, help="fixed training set size (default 1000)")
    g.add_argument("--epochs", type=int, default=100, help="passes over the training set (default 100)")
    g.add_argument("--widths", type=int, nargs="+", default=None, help="hidden widths J_l (default Table I)")
    g.add_argument("--pooling", choices=("sum", "mean"), default="mean", help="pooling (default mean)")
    g.add_argument("--lr-final", type=float, default=0.01, help="cosine decay to lr * this (default 0.01)")
    p.set_defaults(func=run)
    return p


def preset_defaults(args: argparse.Namespace) -> Optional[dict]:
    """``--preset``: the recipe's values, to become the options' defaults (what was given
    explicitly wins; :func:`mimo_fast.cli.main` parses again). ``ValueError`` for an unknown
    preset or one of another model."""
    if args.preset is None:
        return None
    from mimo_fast.train.presets import find
    return find(args.preset, args.model).defaults()


def init_weights(args: argparse.Namespace):
    """``--init``: ``(state_dict, constructor options, record entry)`` of the weights file to
    start from. The file must hold the model being trained, for the same ``--mod`` (the
    check of ``detect.make``: e2e answers to the QAM its learned points started from)."""
    from mimo_fast import comm
    from mimo_fast.detect.learned import weights

    path = args.init
    if path == "shipped":
        path = weights.find_shipped(args.model, args.nr, args.nt, comm.from_name(args.mod))
    try:
        det = weights.load(path, expect=args.model)
    except weights.WeightsError as e:
        raise ValueError(f"--init: {e}") from None
    if det.constellation_request != comm.from_name(args.mod).name:
        raise ValueError(f"--init {str(path)!r} was trained for {det.constellation_request}, "
                         f"not --mod {args.mod}")
    rec = det.record
    entry = {"path": str(path), "steps": rec.get("steps"), "command": rec.get("command"),
             "wall_clock_s": rec.get("wall_clock_s")}
    if rec.get("init"):
        entry["init"] = rec["init"]          # the source's own start: the whole chain stays readable
    return det.state_dict(), det.config(), entry


def run(args: argparse.Namespace) -> int:
    import shlex

    from mimo_fast.outputs import OutputPathError, check_dir
    try:   # --out checked (and created) before any work: not a file, writable
        check_dir(args.out, "--out")
    except OutputPathError as e:
        return _fail(str(e))
    if args.model in PRECODERS:
        given = [f for f, v in (("--init", args.init), ("--clip-grad", args.clip_grad)) if v is not None]
        if given:
            return _fail(f"{' and '.join(given)} apply to the detectors; precoder training "
                        "(docs/precoding.md) does not take them")
        return run_precoder(args, "mimo-fast " + shlex.join(getattr(args, "_argv", sys.argv[1:])))

    import torch

    from mimo_fast import comm
    from mimo_fast.detect import REGISTRY
    from mimo_fast.train import checkpoint, data, dist, loop

    try:
        data_cfg = data.DataConfig(nr=args.nr, nt=args.nt, nt_min=args.nt_min, mod=args.mod,
                                   snr_min=args.snr_min, snr_max=args.snr_max, channel=args.channel,
                                   rho_rx=args.rho_rx, rho_tx=args.rho_tx, nt_dist=args.nt_dist,
                                   nt_step=args.nt_step, snr_per_user=args.snr_per_user, rho_dist=args.rho_dist,
                                   val_nt=tuple(args.val_nt) if args.val_nt else None,
                                   snr_ranges=snr_table(args.snr_range), train_set=args.train_set)
        data_cfg.validate()
        cfg = loop.TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, val_every=args.val_every,
                               val_batches=args.val_batches, patience=args.patience, lr_factor=args.lr_factor,
                               plateau_every=args.plateau_every,
                               min_lr=args.min_lr, plateau_metric=args.plateau_metric, seed=args.seed,
                               clip_grad=args.clip_grad, weight_decay=args.weight_decay, dtype=args.dtype)
        cfg.validate()
        if args.init is not None and args.resume:
            return _fail("--init starts a new run from a weights file; --resume continues the run in "
                        "--out (its checkpoint holds the parameters): use one of them")
        if not args.resume and checkpoint.exists(args.out):
            return _fail(f"--out {args.out!r} already holds a run; pass --resume to continue it or choose "
                        "another folder")
        info = dist.setup(args.device)
    except ValueError as e:
        return _fail(str(e))
    try:
        # the same initial parameters for a seed (and on every rank; rank 0's are broadcast too)
        torch.manual_seed(data.stream_seed(args.seed, 0, 2))
        options = dict(args.model_option)
        init_state, record = None, {"command": "mimo-fast " + shlex.join(getattr(args, "_argv", sys.argv[1:]))}
        if args.init is not None:
            init_state, init_options, record["init"] = init_weights(args)
            options = {**init_options, **options}
        model = REGISTRY[args.model](comm.from_name(args.mod), nr=args.nr, nt=args.nt,
                                     backend=args.backend, **options)
        if init_state is not None:
            from mimo_fast.detect.learned import weights
            # parameters a new option adds as the identity (gepnet cavity_gate) may be absent
            weights.load_state(model, init_state, f"--init {args.init!r}",
                               optional=model.init_optional())
        trainer = loop.Trainer(model, data_cfg, cfg, info, out=args.out, record=record,
                               progress=not args.no_progress, keep_every=args.keep_every)
        if args.resume:
            trainer.resume()
        if info.is_main:
            snr = (", ".join(f"{k}: {lo:g}-{hi:g}" for k, (lo, hi) in sorted(data_cfg.snr_table().items()))
                   if data_cfg.snr_ranges else f"{args.snr_min:g}-{args.snr_max:g}")
            print(f"train {model.name}: {args.nr}x{args.nt} {data_cfg.mod} {data_cfg.channel}, SNR "
                  f"{snr} dB, step {trainer.step}/{cfg.steps}, batch {cfg.batch}"
                  f" x {info.world} rank(s) on {info.device}, {sum(p.numel() for p in trainer.params)} "
                  f"parameters -> {args.out}", file=sys.stderr)
        val = trainer.train()
        if info.is_main:
            shown = ", ".join(f"val_{k} {v:.4g}" for k, v in val.items())
            where = f"{args.out}/{checkpoint.LAST_WEIGHTS}"
            if trainer.interrupted:
                print(f"stopped at step {trainer.step}; continue with --resume ({where})", file=sys.stderr)
            else:
                print(f"done: step {trainer.step}, {trainer.elapsed:.1f} s, {shown} -> {where}", file=sys.stderr)
        return 130 if trainer.interrupted else 0
    except (ValueError, TypeError, FloatingPointError) as e:
        return _fail(str(e))
    finally:
        dist.teardown(info)


def run_precoder(args: argparse.Namespace, command: str) -> int:
    """``mimo-fast train model-gnn|vanilla-gnn``: :func:`mimo_fast.precode.train.train` with
    the precoder options; ``command`` is recorded in the weights files."""
    from mimo_fast.precode.train import BEST, PrecodeTrainConfig, train

    if args.device not in (None, "cpu"):
        return _fail("precoder training runs on the CPU in this version (--device cpu)")
    cfg = PrecodeTrainConfig(model=args.model, n=args.n, k=args.k, snr_db=args.snr, k_dist=args.k_dist,
                             k_mean=args.k_mean, samples=args.samples, epochs=args.epochs, batch=args.batch,
                             lr=args.lr, lr_final=args.lr_final, seed=args.seed, cells=args.cells,
                             objective=args.objective, r_min=args.r_min, dual_lr=args.dual_lr,
                             inter_gain=args.inter_cell_gain,
                             widths=args.widths, pooling=args.pooling,
                             record={"command": command})
    try:
        cfg.validate()
        print(f"train {cfg.model}: M={cfg.cells} N={cfg.n} K={cfg.k_label} SNR {cfg.snr_db:g} dB, "
              f"{cfg.samples} samples, {cfg.epochs} epochs, batch {cfg.batch}, lr {cfg.lr:g} -> {args.out}",
              file=sys.stderr)
        # log=None: the epoch lines go to stderr beside the progress bar
        res = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, log=None)
    except (ValueError, FloatingPointError) as exc:
        return _fail(str(exc))
    where = f"{args.out}/{BEST}"
    if res["interrupted"]:
        print(f"stopped at epoch {res['epoch']}; continue with --resume ({where})", file=sys.stderr)
        return 130
    what = "EE ratio * CSR" if cfg.objective == "ee" else "SE ratio"
    print(f"done: epoch {res['epoch']}, {res['wall']:.1f} s, best val {what} "
          f"{100 * res['best_val_se_ratio']:.2f}% -> {where}", file=sys.stderr)
    return 0


__all__ = ["HELP", "PRECODERS", "add_parser", "preset_defaults", "run", "run_precoder", "init_weights"]
