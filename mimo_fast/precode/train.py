"""Unsupervised training of the learned precoders (paper Sec. III-C, IV-A): a fixed
training set of ``samples`` channels (h_k ~ CN(0, I)), Adam, loss = -sum SE averaged over
the mini-batch; the power normalisation layer enforces (1b).

Run folder: ``last.safetensors`` + ``last.state.pt`` (every epoch and on SIGINT/SIGTERM,
which stop the run after the current step), ``best.safetensors`` (best validation SE ratio
against WMMSE on ``val_samples`` held-out channels, drawn once) and ``log.jsonl`` (one line
per epoch). ``resume=True`` continues exactly: each epoch's shuffle comes from its own seed.

``cells > 1`` trains the multi-cell Model-GNN on P2 (:mod:`mimo_fast.precode.multicell`).
``objective="ee"`` trains the EE Model-GNN (:class:`~mimo_fast.precode.model_gnn.ModelGNNEE`) on
P3 with the primal-dual Lagrangian method (paper Sec. IV-B-2, its ref. [38]): one multiplier
``lam_ik >= 0`` per training sample and user (all 0 at the start); each step maximises the
mean Lagrangian of :func:`mimo_fast.precode.energy.lagrangian` over the parameters (Adam) and then
takes the projected dual step ``lam_ik <- max(0, lam_ik + dual_lr (R_min - R_ik))`` on the
mini-batch's samples. Validation: EE ratio against ZF-Dinkelbach and constraint-satisfaction
ratio (CSR); "best" maximises their product (ours; the paper reports the two separately).
K: ``k_dist="fixed"`` uses K = k; ``"exp"`` draws K per sample as ``round(Exp(k_mean))``
clipped to [2, min(k, n)] (the paper's Fig. 6 training set); a mini-batch mixes K values
and is evaluated one K group at a time.
"""
from __future__ import annotations

import json
import math
import pathlib
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from mimo_fast.precode import energy, metrics, weights
from mimo_fast.precode.multicell import draw_channels_mc, sum_se_mc, wmmse_mc
from mimo_fast.precode.wmmse import wmmse

MODELS = ("model-gnn", "vanilla-gnn")
LAST, STATE, BEST, LOG = "last.safetensors", "last.state.pt", "best.safetensors", "log.jsonl"


@dataclass
class PrecodeTrainConfig:
    model: str = "model-gnn"
    n: int = 8
    k: int = 4
    snr_db: float = 10.0
    k_dist: str = "fixed"
    k_mean: float = 4.0
    samples: int = 1000
    epochs: int = 100
    batch: int = 100
    lr: float = 0.01
    lr_final: float = 0.01
    seed: int = 0
    widths: Optional[list] = None
    pooling: str = "mean"
    val_samples: int = 100
    p_max: float = 1.0
    cells: int = 1
    objective: str = "se"
    r_min: float = 3.0
    dual_lr: float = 0.1
    inter_gain: float = 1.0
    record: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        for name in ("n", "k", "samples", "epochs", "batch", "val_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if not isinstance(self.cells, int) or self.cells < 1:
            raise ValueError(f"--cells must be a positive integer, got {self.cells!r}")
        if self.cells > 1 and (self.model != "model-gnn" or self.k_dist != "fixed"):
            raise ValueError("--cells > 1 trains the multi-cell Model-GNN with a fixed K only "
                             "(vanilla-gnn and --k-dist exp with --cells > 1 are not in this version)")
        if self.objective not in ("se", "ee"):
            raise ValueError(f"--objective must be 'se' or 'ee', got {self.objective!r}")
        if self.objective == "ee":
            if self.model != "model-gnn" or self.cells != 1:
                raise ValueError("--objective ee trains the single-cell model-gnn only (vanilla-gnn and "
                                 "--cells > 1 with --objective ee are not in this version)")
            if self.k > self.n:
                raise ValueError(f"--objective ee needs --k <= --n (its ZF-Dinkelbach reference), got "
                                 f"n={self.n}, k={self.k}")
            if not self.r_min >= 0 or not self.dual_lr > 0:
                raise ValueError(f"--r-min must be >= 0 and --dual-lr > 0, got {self.r_min!r}, {self.dual_lr!r}")
        if not 0 < self.inter_gain <= 1 or (self.inter_gain != 1 and self.cells == 1):
            raise ValueError(f"--inter-cell-gain must be in (0, 1] and needs --cells > 1, got {self.inter_gain!r}")
        if self.k_dist not in ("fixed", "exp"):
            raise ValueError(f"--k-dist must be 'fixed' or 'exp', got {self.k_dist!r}")
        if self.k_dist == "exp" and not self.k_mean > 0:
            raise ValueError(f"--k-mean must be > 0, got {self.k_mean!r}")
        if not self.lr > 0 or not self.p_max > 0:
            raise ValueError(f"--lr and p_max must be > 0, got {self.lr!r}, {self.p_max!r}")
        if not 0 < self.lr_final <= 1:
            raise ValueError(f"--lr-final must be in (0, 1], got {self.lr_final!r}")

    def lr_at(self, epoch: int) -> float:
        """Cosine decay from ``lr`` to ``lr * lr_final`` over the epochs (ours: the paper's
        constant 0.01 makes the SE jump back and forth late in training)."""
        frac = self.lr_final + (1 - self.lr_final) * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
        return self.lr * frac

    def run_defining(self) -> dict:
        d = asdict(self)
        for key in ("record",):
            d.pop(key)
        return d

    @property
    def k_label(self):
        return self.k if self.k_dist == "fixed" else f"exp{self.k_mean:g}"


def build_model(cfg: PrecodeTrainConfig):
    torch.manual_seed(cfg.seed)                     # same initial parameters for a seed
    name = "model-gnn-mc" if cfg.cells > 1 else "model-gnn-ee" if cfg.objective == "ee" else cfg.model
    cls = weights.registry()[name]
    options = {"pooling": cfg.pooling}
    if cfg.widths is not None:
        options["widths"] = cfg.widths
    return cls(**options)


def draw_set(cfg: PrecodeTrainConfig, count: int, stream: int) -> list[torch.Tensor]:
    """``count`` channels as a list of ``(N, K_i)`` tensors (seeded by ``(seed, stream)``)."""
    g = torch.Generator().manual_seed(cfg.seed * 1000 + stream)
    if cfg.cells > 1:
        return list(draw_channels_mc(count, cfg.cells, cfg.n, cfg.k, generator=g, inter_gain=cfg.inter_gain))
    if cfg.k_dist == "fixed":
        return list(metrics.draw_channels(count, cfg.n, cfg.k, generator=g))
    e = torch.empty(count, dtype=torch.float64).exponential_(1.0 / cfg.k_mean, generator=g)
    ks = e.round().clamp(2, min(cfg.k, cfg.n)).long().tolist()
    return [metrics.draw_channels(1, cfg.n, kk, generator=g)[0] for kk in ks]


def groups(Hs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Stack a list of channels into one batch per K."""
    return [H for _, H in indexed_groups(Hs)]


def indexed_groups(Hs: list[torch.Tensor]) -> list[tuple[list, torch.Tensor]]:
    """``[(positions in Hs, stacked channels)]``, one per K, in increasing K."""
    by_k: dict = {}
    for i, H in enumerate(Hs):
        by_k.setdefault(H.shape[-1], []).append(i)
    return [(v, torch.stack([Hs[i] for i in v])) for _, v in sorted(by_k.items())]


class _Stop:
    def __init__(self):
        self.flag = False

    def __enter__(self):
        self.old = {s: signal.signal(s, self._set) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _set(self, *_):
        self.flag = True

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


def train(cfg: PrecodeTrainConfig, out, *, resume: bool = False, progress: bool = True,
          log=print) -> dict:
    """Train; returns ``{"epoch", "val_se_ratio", "best_val_se_ratio", "wall", "interrupted"}``
    (EE: the ratios are EE ratio * CSR)."""
    cfg.validate()
    out = pathlib.Path(out)
    if not resume and ((out / STATE).exists() or (out / LAST).exists()):
        raise ValueError(f"--out {str(out)!r} already holds a run; pass --resume or choose another folder")
    nv = metrics.noise_var(cfg.snr_db, cfg.p_max)
    se_of, ref_of = (sum_se_mc, wmmse_mc) if cfg.cells > 1 else (metrics.sum_se, wmmse)
    is_ee = cfg.objective == "ee"
    if is_ee:                   # EE "ratio" against ZF-Dinkelbach; se_of returns the EE
        se_of = lambda H, V, nv_: metrics.ee(H, V, nv_)
        ref_of = lambda H, nv_, p_max: energy.zf_dinkelbach(H, nv_, cfg.r_min)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    train_set = draw_set(cfg, cfg.samples, 0)
    val_set = draw_set(cfg, cfg.val_samples, 1)
    val_groups = groups(val_set)
    val_ref = [se_of(H, ref_of(H, nv, cfg.p_max)[0], nv) for H in val_groups]
    lam = torch.zeros(cfg.samples, max(H.shape[-1] for H in train_set)) if is_ee else None
    epoch, step, best, elapsed = 0, 0, -1.0, 0.0
    if resume:
        state = torch.load(out / STATE, weights_only=True)
        saved = dict(state["options"])
        for key, default in (("objective", "se"), ("r_min", 3.0), ("dual_lr", 0.1), ("inter_gain", 1.0)):
            saved.setdefault(key, default)          # runs checkpointed before these options existed
        if saved != json.loads(json.dumps(cfg.run_defining())):
            raise ValueError(f"--resume: {str(out)!r} was run with {state['options']}, not {cfg.run_defining()}")
        wstate, meta = weights.read(out / LAST)
        if (meta.get("record") or {}).get("epoch_step") != [state["epoch"], state["step"]]:
            raise ValueError(f"--resume: {str(out / LAST)!r} and {str(out / STATE)!r} are from different steps")
        model.load_state_dict(wstate)
        opt.load_state_dict(state["optimizer"])
        epoch, step, best, elapsed = state["epoch"], state["step"], state["best"], state["elapsed"]
        if is_ee:
            lam = state["lam"]
    out.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = -(-cfg.samples // cfg.batch)

    def record(**extra):
        ee_fields = {"objective": "ee", "r_min": cfg.r_min, "dual_lr": cfg.dual_lr} if is_ee else {}
        return dict(cfg.record, samples=cfg.samples, epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr,
                    seed=cfg.seed, k_dist=cfg.k_dist, wall_seconds=round(elapsed, 1), **ee_fields, **extra)

    def checkpoint():
        st = {"epoch": epoch, "step": step, "optimizer": opt.state_dict(), "best": best,
              "elapsed": elapsed, "options": cfg.run_defining(), "lam": lam}
        weights.atomic_write(out / STATE, lambda tmp: torch.save(st, tmp))
        weights.save(model, out / LAST, n=cfg.n, k=cfg.k_label, snr_db=cfg.snr_db, cells=cfg.cells,
                     record=record(epoch_step=[epoch, step]))

    def validate() -> tuple[float, float]:
        """``(mean SE, SE ratio)``; EE: ``(mean EE, EE ratio * CSR)``, the CSR in ``ee_val``."""
        with torch.no_grad():
            Vs = [model(H, cfg.p_max) for H in val_groups]
            se = [se_of(H, V, nv) for H, V in zip(val_groups, Vs)]
            se_all, ref_all = torch.cat(se), torch.cat(val_ref)
            ratio = metrics.se_ratio(se_all, ref_all)
            if not is_ee:
                return float(se_all.mean()), ratio
            ok = torch.cat([(metrics.rates(H, V, nv) >= cfg.r_min).flatten() for H, V in zip(val_groups, Vs)])
        ee_val.update(ee_ratio=ratio, csr=float(ok.double().mean()))
        return float(se_all.mean()), ratio * ee_val["csr"]

    def batch_loss(idx: list) -> torch.Tensor:
        """Mean over the mini-batch of -SE, or of -Lagrangian (then the dual step on ``lam``)."""
        batch = [train_set[i] for i in idx]
        if not is_ee:
            return -torch.cat([se_of(H, model(H, cfg.p_max), nv) for H in groups(batch)]).mean()
        terms = []
        for pos, H in indexed_groups(batch):
            rows, kk = [idx[p] for p in pos], H.shape[-1]
            V = model(H, cfg.p_max)
            terms.append(energy.lagrangian(H, V, nv, cfg.r_min, lam[rows, :kk]))
            lam[rows, :kk] = energy.dual_step(lam[rows, :kk], metrics.rates(H, V, nv), cfg.r_min, cfg.dual_lr)
        return -torch.cat(terms).mean()

    ee_val: dict = {}

    ratio = best
    t0 = time.perf_counter() - elapsed
    with _Stop() as stop:
        while epoch < cfg.epochs and not stop.flag:
            perm = torch.randperm(cfg.samples, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(epoch)
            losses = []
            while step < steps_per_epoch and not stop.flag:
                loss = batch_loss(perm[step * cfg.batch:(step + 1) * cfg.batch].tolist())
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
            elapsed = time.perf_counter() - t0
            if step < steps_per_epoch:          # interrupted inside the epoch
                break
            epoch, step = epoch + 1, 0
            val_se, ratio = validate()
            if ratio > best:
                best = ratio
                extra = ({"val_ee_ratio": round(ee_val["ee_ratio"], 5), "val_csr": round(ee_val["csr"], 5)}
                         if is_ee else {"val_se_ratio": round(ratio, 5)})
                weights.save(model, out / BEST, n=cfg.n, k=cfg.k_label, snr_db=cfg.snr_db, cells=cfg.cells,
                             record=record(epoch=epoch, **extra))
            line = {"epoch": epoch, "loss": sum(losses) / len(losses), "val_se": val_se,
                    "val_se_ratio": ratio, "wall": round(elapsed, 2)}
            if is_ee:   # val_se holds the mean EE and val_se_ratio EE ratio * CSR here
                line = {"epoch": epoch, "loss": line["loss"], "val_ee": val_se, "val_ee_ratio": ee_val["ee_ratio"],
                        "val_csr": ee_val["csr"], "val_score": ratio, "lam_mean": float(lam.mean()),
                        "wall": line["wall"]}
            with open(out / LOG, "a") as f:
                f.write(json.dumps(line) + "\n")
            if progress and is_ee:
                log(f"epoch {epoch}/{cfg.epochs}: loss {line['loss']:.4f}, val EE {val_se:.4f} "
                    f"({100 * ee_val['ee_ratio']:.2f}% of ZF-Dinkelbach), CSR {100 * ee_val['csr']:.2f}%, "
                    f"{elapsed:.1f} s")
            elif progress:
                log(f"epoch {epoch}/{cfg.epochs}: loss {line['loss']:.4f}, val SE {val_se:.3f} "
                    f"({100 * ratio:.2f}% of WMMSE), {elapsed:.1f} s")
            checkpoint()
        elapsed = time.perf_counter() - t0
        if stop.flag:
            checkpoint()
    return {"epoch": epoch, "val_se_ratio": ratio, "best_val_se_ratio": best, "wall": elapsed,
            "interrupted": stop.flag}


def main(args, command: str) -> int:
    """``mimo-fast train model-gnn|vanilla-gnn`` (arguments from :mod:`mimo_fast.cli`)."""
    import sys

    def fail(msg: str) -> int:
        print(f"mimo-fast train: error: {msg}", file=sys.stderr)
        return 2

    if args.device not in (None, "cpu"):
        return fail("precoder training runs on the CPU in this version (--device cpu)")
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
        res = train(cfg, args.out, resume=args.resume, progress=not args.no_progress,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
    except ValueError as exc:
        return fail(str(exc))
    where = f"{args.out}/{BEST}"
    if res["interrupted"]:
        print(f"stopped at epoch {res['epoch']}; continue with --resume ({where})", file=sys.stderr)
        return 130
    what = "EE ratio * CSR" if cfg.objective == "ee" else "SE ratio"
    print(f"done: epoch {res['epoch']}, {res['wall']:.1f} s, best val {what} "
          f"{100 * res['best_val_se_ratio']:.2f}% -> {where}", file=sys.stderr)
    return 0


__all__ = ["PrecodeTrainConfig", "train", "build_model", "draw_set", "groups", "indexed_groups", "main", "MODELS"]
