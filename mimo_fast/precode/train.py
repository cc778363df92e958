"""Unsupervised training of the learned precoders (paper Sec. III-C, IV-A): a fixed
training set of ``samples`` channels (h_k ~ CN(0, I)), Adam, loss = -sum SE averaged over
the mini-batch; the power normalisation layer enforces (1b).

The run is the detectors' (:class:`mimo_fast.train.loop.Loop`, here :class:`PrecoderTrainer`):
one step per mini-batch, an epoch being ``ceil(samples / batch)`` steps. Run folder, as for
every ``mimo-fast train``: ``last.safetensors`` + ``last.state.pt`` (every epoch and on
SIGINT/SIGTERM, which stop the run at the end of the current step), ``best.safetensors``
(best validation SE ratio against WMMSE on ``val_samples`` held-out channels, drawn once)
and ``log.jsonl`` (one line per epoch). ``resume=True`` continues exactly: each epoch's
shuffle comes from its own seed (run folders of the precoders' older loop resume too).

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
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from mimo_fast.precode import energy, metrics, weights
from mimo_fast.precode.multicell import draw_channels_mc, sum_se_mc, wmmse_mc
from mimo_fast.precode.wmmse import wmmse
from mimo_fast.train import checkpoint
from mimo_fast.train.loop import Loop

MODELS = ("model-gnn", "vanilla-gnn")
# the run folder's files: those of every `mimo-fast train` run (mimo_fast.train.checkpoint)
LAST, STATE, BEST, LOG = checkpoint.LAST_WEIGHTS, checkpoint.LAST_STATE, checkpoint.BEST_WEIGHTS, checkpoint.LOG


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


class PrecoderTrainer(Loop):
    """The precoders' run on the detectors' loop (:class:`mimo_fast.train.loop.Loop`):
    one step per mini-batch of the fixed training set (an epoch is ``ceil(samples /
    batch)`` steps, each epoch's order from its own seed), the learning rate of
    :meth:`PrecodeTrainConfig.lr_at` for the step's epoch, a validation (and checkpoint)
    at every epoch's end, ``best.safetensors`` at the best validation ratio. ``log``
    (``None``: stderr, beside the progress bar) gets a line per epoch when ``progress``."""

    def __init__(self, cfg: PrecodeTrainConfig, out, *, progress: bool = True, log=None):
        cfg.validate()
        self.cfg = cfg
        self.nv = metrics.noise_var(cfg.snr_db, cfg.p_max)
        self.is_ee = cfg.objective == "ee"
        if self.is_ee:          # EE "ratio" against ZF-Dinkelbach; se_of returns the EE
            self.se_of = lambda H, V, nv_: metrics.ee(H, V, nv_)
            self.ref_of = lambda H, nv_, p_max: energy.zf_dinkelbach(H, nv_, cfg.r_min)
        else:
            self.se_of, self.ref_of = (sum_se_mc, wmmse_mc) if cfg.cells > 1 else (metrics.sum_se, wmmse)
        self.model = build_model(cfg)
        self.label = self.model.name
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.params = list(self.model.parameters())
        self.train_set = draw_set(cfg, cfg.samples, 0)
        self.val_groups = groups(draw_set(cfg, cfg.val_samples, 1))
        self.val_ref = [self.se_of(H, self.ref_of(H, self.nv, cfg.p_max)[0], self.nv) for H in self.val_groups]
        #: the dual variables of P3, one per training sample and user (EE only)
        self.lam = torch.zeros(cfg.samples, max(H.shape[-1] for H in self.train_set)) if self.is_ee else None
        self.steps_per_epoch = -(-cfg.samples // cfg.batch)
        self._perm = (None, None)
        self._log = log
        self._setup(None, out, cfg.record, progress)

    # --- the schedule -----------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch

    @property
    def val_every(self) -> int:
        return self.steps_per_epoch

    @property
    def epoch(self) -> int:
        """Finished epochs."""
        return self.step // self.steps_per_epoch

    def batch_samples(self) -> int:
        return self.cfg.batch

    def _order(self, epoch: int) -> torch.Tensor:
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch)
            self._perm = (epoch, torch.randperm(self.cfg.samples, generator=g))
        return self._perm[1]

    # --- steps ------------------------------------------------------------------------------
    def batch_loss(self, idx: list) -> torch.Tensor:
        """Mean over the mini-batch of -SE, or of -Lagrangian (then the dual step on ``lam``)."""
        cfg, model, nv, lam = self.cfg, self.model, self.nv, self.lam
        batch = [self.train_set[i] for i in idx]
        if not self.is_ee:
            return -torch.cat([self.se_of(H, model(H, cfg.p_max), nv) for H in groups(batch)]).mean()
        terms = []
        for pos, H in indexed_groups(batch):
            rows, kk = [idx[p] for p in pos], H.shape[-1]
            V = model(H, cfg.p_max)
            terms.append(energy.lagrangian(H, V, nv, cfg.r_min, lam[rows, :kk]))
            lam[rows, :kk] = energy.dual_step(lam[rows, :kk], metrics.rates(H, V, nv), cfg.r_min, cfg.dual_lr)
        return -torch.cat(terms).mean()

    def train_step(self, stop: bool = False):
        epoch, i = divmod(self.step, self.steps_per_epoch)
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr_at(epoch)
        b = self.cfg.batch
        loss = self.batch_loss(self._order(epoch)[i * b:(i + 1) * b].tolist())
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"{self.model.name}: non-finite training loss at step {self.step + 1} "
                                     f"(lr {self.lr():.3g}); lower --lr")
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.step += 1
        return float(loss.detach()), stop

    def validate(self) -> dict:
        """SE: ``{"se": mean SE, "se_ratio"}``; EE: ``{"ee": mean EE, "ee_ratio", "csr",
        "score": ee_ratio * csr}``."""
        cfg, nv = self.cfg, self.nv
        with torch.no_grad():
            Vs = [self.model(H, cfg.p_max) for H in self.val_groups]
            se = [self.se_of(H, V, nv) for H, V in zip(self.val_groups, Vs)]
            se_all, ref_all = torch.cat(se), torch.cat(self.val_ref)
            ratio = metrics.se_ratio(se_all, ref_all)
            if not self.is_ee:
                return {"se": float(se_all.mean()), "se_ratio": ratio}
            ok = torch.cat([(metrics.rates(H, V, nv) >= cfg.r_min).flatten() for H, V in zip(self.val_groups, Vs)])
        csr = float(ok.double().mean())
        return {"ee": float(se_all.mean()), "ee_ratio": ratio, "csr": csr, "score": ratio * csr}

    def score(self, val: dict) -> float:
        """The validation figure to maximise: SE ratio, or EE ratio * CSR."""
        return val["score"] if self.is_ee else val["se_ratio"]

    def metric(self, val: dict) -> float:
        return -self.score(val)

    def log_line(self, val: dict, train_loss: float) -> dict:
        if self.is_ee:
            return {"epoch": self.epoch, "step": self.step, "loss": train_loss, "lr": self.lr(), "val_ee": val["ee"],
                    "val_ee_ratio": val["ee_ratio"], "val_csr": val["csr"], "val_score": val["score"],
                    "lam_mean": float(self.lam.mean()), "wall": round(self.elapsed, 2)}
        return {"epoch": self.epoch, "step": self.step, "loss": train_loss, "lr": self.lr(), "val_se": val["se"],
                "val_se_ratio": val["se_ratio"], "wall": round(self.elapsed, 2)}

    def on_validated(self, val: dict, line: dict) -> None:
        if not self.progress:
            return
        cfg = self.cfg
        if self.is_ee:
            msg = (f"epoch {self.epoch}/{cfg.epochs}: loss {line['loss']:.4f}, val EE {val['ee']:.4f} "
                   f"({100 * val['ee_ratio']:.2f}% of ZF-Dinkelbach), CSR {100 * val['csr']:.2f}%, "
                   f"{self.elapsed:.1f} s")
        else:
            msg = (f"epoch {self.epoch}/{cfg.epochs}: loss {line['loss']:.4f}, val SE {val['se']:.3f} "
                   f"({100 * val['se_ratio']:.2f}% of WMMSE), {self.elapsed:.1f} s")
        (self._log or self.write)(msg)

    def postfix(self, loss: float) -> dict:
        shown = {"loss": f"{loss:.4g}", "lr": f"{self.lr():.2g}"}
        if self.last_val:
            shown["val"] = f"{self.score(self.last_val):.4f}"
        return shown

    # --- files ------------------------------------------------------------------------------
    def record(self) -> dict:
        cfg = self.cfg
        ee_fields = {"objective": "ee", "r_min": cfg.r_min, "dual_lr": cfg.dual_lr} if self.is_ee else {}
        return dict(cfg.record, samples=cfg.samples, epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr,
                    seed=cfg.seed, k_dist=cfg.k_dist, wall_seconds=round(self.elapsed, 1), **ee_fields,
                    epoch_step=[self.epoch, self.step % self.steps_per_epoch])

    def best_record(self) -> dict:
        val = self.last_val
        extra = ({"val_ee_ratio": round(val["ee_ratio"], 5), "val_csr": round(val["csr"], 5)}
                 if self.is_ee else {"val_se_ratio": round(val["se_ratio"], 5)})
        rec = dict(self.record(), epoch=self.epoch, **extra)
        rec.pop("epoch_step")
        return rec

    def save_weights(self, path, record: dict) -> None:
        cfg = self.cfg
        weights.save(self.model, path, n=cfg.n, k=cfg.k_label, snr_db=cfg.snr_db, cells=cfg.cells, record=record)

    def run_options(self) -> dict:
        return self.cfg.run_defining()

    def extra_state(self) -> dict:
        return {"lam": self.lam}

    def load_extra_state(self, state: dict) -> None:
        if self.is_ee:
            self.lam = state["lam"]

    def load_weights(self, state: dict) -> None:
        path = self.out / checkpoint.LAST_WEIGHTS
        try:
            params, meta = weights.read(path)
        except weights.WeightsError as exc:
            raise checkpoint.CheckpointError(f"--resume: {exc}") from None
        if meta["precoder"] != self.model.name:
            raise checkpoint.CheckpointError(f"--resume: {str(path)!r} holds a {meta['precoder']!r} precoder, this "
                                             f"run trains {self.model.name!r}")
        mine = json.loads(json.dumps(self.model.config(), sort_keys=True))
        if meta.get("config") != mine:
            raise checkpoint.CheckpointError(f"--resume: {str(path)!r} was trained with options {meta.get('config')}; "
                                             f"this run builds {mine}")
        rec = meta.get("record") or {}
        step = rec.get("step")
        if step is None and isinstance(rec.get("epoch_step"), list) and len(rec["epoch_step"]) == 2:
            step = rec["epoch_step"][0] * self.steps_per_epoch + rec["epoch_step"][1]   # an older run folder
        checkpoint.check_steps(self.out, state, step)
        own = self.model.state_dict()
        bad = sorted(set(own) ^ set(params)) + sorted(k for k in set(own) & set(params)
                                                      if own[k].shape != params[k].shape)
        if bad:
            raise checkpoint.CheckpointError(f"--resume: {str(path)!r} does not fit this run's {self.model.name}: {bad}")
        self.model.load_state_dict(params)

    def upgrade_state(self, state: dict) -> dict:
        """A run folder of the precoders' own loop (before they shared this one): its state
        counted ``(epoch, step in the epoch)``, kept the options as a dict and the best ratio
        (to maximise), and its weights recorded ``epoch_step``."""
        if "format" in state or "epoch" not in state:
            return state
        opts = dict(state["options"])
        for key, default in (("objective", "se"), ("r_min", 3.0), ("dual_lr", 0.1), ("inter_gain", 1.0)):
            opts.setdefault(key, default)          # runs checkpointed before these options existed
        step = state["epoch"] * self.steps_per_epoch + state["step"]
        return {"format": checkpoint.FORMAT, "step": step, "optimizer": state["optimizer"], "lam": state.get("lam"),
                "best": -state["best"], "best_step": None, "elapsed": state["elapsed"], "last_val": {},
                "pending_losses": [], "options": json.dumps(opts, sort_keys=True)}


def train(cfg: PrecodeTrainConfig, out, *, resume: bool = False, progress: bool = True,
          log=print) -> dict:
    """Train; returns ``{"epoch", "val_se_ratio", "best_val_se_ratio", "wall", "interrupted"}``
    (EE: the ratios are EE ratio * CSR). ``progress``: a progress bar on stderr and, through
    ``log`` (``None``: stderr beside the bar), a line per epoch."""
    cfg.validate()
    out = pathlib.Path(out)
    if not resume and checkpoint.exists(out):
        raise ValueError(f"--out {str(out)!r} already holds a run; pass --resume or choose another folder")
    trainer = PrecoderTrainer(cfg, out, progress=progress, log=log)
    if resume:
        trainer.resume()
    trainer.train()
    val = trainer.last_val
    return {"epoch": trainer.epoch, "val_se_ratio": trainer.score(val) if val else -1.0,
            "best_val_se_ratio": -trainer.best if math.isfinite(trainer.best) else -1.0,
            "wall": trainer.elapsed, "interrupted": trainer.interrupted}


def main(args, command: str) -> int:
    """Deprecated: ``mimo-fast train model-gnn|vanilla-gnn`` is
    :func:`mimo_fast.cli.train.run_precoder` (same arguments)."""
    import warnings
    warnings.warn("mimo_fast.precode.train.main is deprecated: use mimo_fast.cli.train.run_precoder",
                  DeprecationWarning, stacklevel=2)
    from mimo_fast.cli.train import run_precoder
    return run_precoder(args, command)


__all__ = ["PrecodeTrainConfig", "PrecoderTrainer", "train", "build_model", "draw_set", "groups", "indexed_groups",
           "main", "MODELS"]
