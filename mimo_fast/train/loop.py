"""The training loop: :class:`Loop`, the run every ``mimo-fast train`` shares (detectors
and precoders), and :class:`Trainer`, the loop for any
:class:`~mimo_fast.detect.learned.LearnedDetector`.

:class:`Loop` steps to the end with a progress bar; SIGINT/SIGTERM (the stop flag) end the
run at the end of the current step with a checkpoint; every ``val_every`` steps and at the
last one it validates, appends a line to ``log.jsonl``, writes ``best.safetensors`` when
the validation metric improves and the checkpoint pair ``last.safetensors`` +
``last.state.pt`` (:mod:`mimo_fast.train.checkpoint`); :meth:`Loop.resume` continues from
that pair. Subclasses supply the model's step, validation, weights files and extra state
(the precoders' is :class:`mimo_fast.precode.train.PrecoderTrainer`).

For detectors, each step draws a fresh batch (:class:`~mimo_fast.train.data.BatchGenerator`), takes the
model's own ``training_loss`` (the paper's loss), averages gradients over ranks
(:func:`~mimo_fast.train.dist.allreduce_grads`) and takes an Adam step. Every
``val_every`` steps it measures the loss and the SER (present users only) on a fixed
validation set (the same batches every time: a generator re-seeded from the validation
stream), steps ``ReduceLROnPlateau`` on the validation loss (or SER), appends a line to
``log.jsonl``, writes ``best.safetensors`` when the metric improves and a checkpoint
(:mod:`mimo_fast.train.checkpoint`).

Resuming restores the parameters, optimizer, scheduler, step counter, every rank's data
generator and RNG states, so a run stopped at a checkpoint and resumed gives the same
parameters bit for bit as one that never stopped (same machine, world size and backend).
SIGINT/SIGTERM stop the run at the end of the current step on every rank, with a checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import signal
import sys
import time
from typing import Optional

import torch

from mimo_fast.detect.learned import weights
from mimo_fast.train import checkpoint
from mimo_fast.train.data import VAL_STREAM, BatchGenerator, DataConfig
from mimo_fast.train.dist import DistInfo, allreduce_grads, allreduce_sum, gather_objects
from mimo_fast.weights_io import atomic_write

PLATEAU_METRICS = ("loss", "ser")
SNAPSHOTS = "snapshots"


@dataclasses.dataclass
class TrainConfig:
    steps: int = 1000
    batch: int = 256               # per rank
    lr: float = 1e-3
    val_every: int = 100
    val_batches: int = 4
    patience: int = 5              # validations without improvement before the lr drops
    lr_factor: float = 0.5
    min_lr: float = 0.0
    plateau_metric: str = "loss"
    seed: int = 0
    clip_grad: Optional[float] = None   # max global gradient norm (None: no clipping)
    weight_decay: float = 0.0      # Adam's L2 term (torch.optim.Adam weight_decay)
    dtype: str = "float32"         # parameters and batches: "float32" or "float64"
    #: the plateau scheduler sees validations 1, 1 + N, 1 + 2N, ... only (the GEPNet authors'
    #: code steps it every 50 epochs); every validation is still logged and can be the best
    plateau_every: int = 1

    #: options added later: left out of ``to_dict`` at these defaults, so older checkpoints resume
    _LATER = {"clip_grad": None, "weight_decay": 0.0, "dtype": "float32", "plateau_every": 1}
    DTYPES = {"float32": torch.float32, "float64": torch.float64}

    def validate(self) -> None:
        for name in ("steps", "batch", "val_every", "val_batches", "plateau_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {self.patience!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive float, got {self.lr!r}")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor!r}")
        c = self.clip_grad
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float))
                              or not math.isfinite(c) or c <= 0):
            raise ValueError(f"clip_grad must be a positive float or None, got {self.clip_grad!r}")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not math.isfinite(wd) or wd < 0:
            raise ValueError(f"weight_decay must be a float >= 0, got {wd!r}")
        if self.dtype not in self.DTYPES:
            raise ValueError(f"dtype must be one of {tuple(self.DTYPES)}, got {self.dtype!r}")
        if self.plateau_metric not in PLATEAU_METRICS:
            raise ValueError(f"plateau_metric must be one of {PLATEAU_METRICS}, got {self.plateau_metric!r}")

    def to_dict(self) -> dict:
        # options added later are left out at their default, so older checkpoints still resume
        return {k: v for k, v in dataclasses.asdict(self).items() if not (k in self._LATER and v == self._LATER[k])}

    def run_defining(self) -> dict:
        """Options a resumed run must share with the checkpoint (``steps`` may grow)."""
        return {k: v for k, v in self.to_dict().items() if k != "steps"}


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop stops after the current step on every rank."""

    def __init__(self):
        self.set, self._old = False, {}

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.set = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


_StopFlag = StopFlag   # the name it had


class Loop:
    """The run shared by every trainer. A subclass sets ``model``, ``opt`` (the optimizer)
    and ``params`` and calls :meth:`_setup`; it defines :meth:`train_step`,
    :meth:`validate`, :meth:`metric`, :meth:`log_line`, :meth:`save_weights`,
    :meth:`load_weights`, :meth:`record`, :meth:`run_options`, and the properties
    ``total_steps`` and ``val_every`` (and :meth:`batch_samples` for ``keep_every``
    snapshots); optionally :meth:`extra_state` / :meth:`load_extra_state`,
    :meth:`on_scheduled` (a scheduler), :meth:`best_record`, :meth:`on_validated` (a
    message), :meth:`postfix` (the progress bar's fields) and :meth:`upgrade_state` (older
    checkpoints)."""

    #: the progress bar's label
    label = "model"

    def _setup(self, dist: Optional[DistInfo], out, record: Optional[dict], progress: bool,
               keep_every: Optional[int] = None) -> None:
        self.dist = dist or DistInfo()
        self.out = pathlib.Path(out) if out is not None else None
        self.record_extra = dict(record or {})
        self.progress = progress and self.dist.is_main
        if keep_every is not None and (isinstance(keep_every, bool) or not isinstance(keep_every, int)
                                       or keep_every < 1):
            raise ValueError(f"keep_every must be a positive int or None, got {keep_every!r}")
        #: every this many steps the model is also kept as snapshots/step_XXXXXXXX.safetensors
        #: (learning curves; not part of the run's options: a resumed run may change it)
        self.keep_every = keep_every
        self.step, self.elapsed, self._t_last = 0, 0.0, time.perf_counter()
        self.best, self.best_step, self.last_val = math.inf, None, {}
        self.pending_losses: list = []   # training losses since the last scheduled validation
        self.interrupted = False
        self._bar = None

    # --- what a subclass defines ---------------------------------------------------------------
    total_steps: int
    val_every: int

    def train_step(self, stop: bool = False):
        """One optimiser step; returns ``(loss, stop)`` (stop: this or any rank was asked to)."""
        raise NotImplementedError

    def validate(self) -> dict:
        raise NotImplementedError

    def metric(self, val: dict) -> float:
        """The validation metric to minimise (plateau scheduler and ``best.safetensors``)."""
        raise NotImplementedError

    def log_line(self, val: dict, train_loss: float) -> dict:
        raise NotImplementedError

    def save_weights(self, path, record: dict) -> None:
        raise NotImplementedError

    def load_weights(self, state: dict) -> None:
        """Load ``out/last.safetensors`` into the model, checking it fits the model and ``state``'s step."""
        raise NotImplementedError

    def record(self) -> dict:
        raise NotImplementedError

    def run_options(self) -> dict:
        raise NotImplementedError

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def on_scheduled(self, metric: float) -> None:
        """After each scheduled validation (the detectors' plateau scheduler)."""

    def best_record(self) -> dict:
        return self.record()

    def on_validated(self, val: dict, line: dict) -> None:
        """After each validation's log line (a progress message)."""

    def upgrade_state(self, state: dict) -> dict:
        """A checkpoint state written by an older version, in this format."""
        return state

    # --- state ------------------------------------------------------------------------------
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        """The training state (with the detectors' per-rank states: then a collective)."""
        return {"step": self.step, "optimizer": self.opt.state_dict(), **self.extra_state(),
                "best": self.best, "best_step": self.best_step, "elapsed": self.elapsed,
                "last_val": self.last_val, "pending_losses": list(self.pending_losses),
                "options": json.dumps(self.run_options(), sort_keys=True)}

    def load_state_dict(self, state: dict) -> None:
        saved = json.loads(state["options"])
        mine = json.loads(json.dumps(self.run_options(), sort_keys=True))
        if saved != mine:
            diff = _diff(saved, mine)
            raise checkpoint.CheckpointError(
                "--resume continues a run with the options it started with; these differ from the "
                f"checkpoint (saved -> now): {diff}")
        if state["step"] > self.total_steps:
            raise checkpoint.CheckpointError(
                f"--resume: the checkpoint is at step {state['step']}, past --steps {self.total_steps}")
        self.opt.load_state_dict(state["optimizer"])
        self.load_extra_state(state)
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.best, self.best_step = float(state["best"]), state["best_step"]
        self.last_val = dict(state.get("last_val") or {})
        self.pending_losses = [float(v) for v in state["pending_losses"]]

    def resume(self) -> None:
        """Continue the run in ``out`` (model weights and training state)."""
        if self.out is None:
            raise ValueError("resume needs an output folder (out=...)")
        state = checkpoint.load_state(self.out, self.upgrade_state)
        self.load_weights(state)
        self.load_state_dict(state)
        if self.dist.is_main and self.step < self.total_steps:
            _truncate_log(self.out / checkpoint.LOG, self.step, self.val_every)

    def save_checkpoint(self) -> None:
        self._tick()
        state = self.state_dict()          # collective: every rank
        if self.out is not None and self.dist.is_main:
            record = dict(self.record(), step=self.step)
            checkpoint.save_pair(self.out, state, lambda path: self.save_weights(path, record))

    def _snapshot(self) -> None:
        if self.keep_every is None or self.step % self.keep_every or self.out is None or not self.dist.is_main:
            return
        folder = self.out / SNAPSHOTS
        folder.mkdir(parents=True, exist_ok=True)
        self._tick()
        self.save_weights(folder / f"step_{self.step:08d}.safetensors",
                          dict(self.record(), step=self.step, samples=self.step * self.batch_samples()))

    def batch_samples(self) -> int:
        """Samples per step over all ranks (recorded in snapshots)."""
        raise NotImplementedError

    def _tick(self) -> None:
        """Add the wall-clock since the last tick to ``elapsed`` (kept across resumes)."""
        now = time.perf_counter()
        self.elapsed += now - self._t_last
        self._t_last = now

    def _after_validation(self, scheduled: bool) -> None:
        """Validate, log, and on the ``val_every`` schedule step the scheduler and keep the
        best weights. The end of a run off the schedule only logs: a resumed run that goes
        past that step must make the same scheduler decisions as one that never stopped."""
        val = self.validate()
        self._tick()
        self.last_val = val
        train_loss = sum(self.pending_losses) / max(len(self.pending_losses), 1)
        improved = False
        if scheduled:
            metric = self.metric(val)
            self.on_scheduled(metric)
            improved = metric < self.best
            if improved:
                self.best, self.best_step = metric, self.step
            self.pending_losses = []
        line = self.log_line(val, train_loss)
        if self.dist.is_main and self.out is not None:
            with open(self.out / checkpoint.LOG, "a") as f:
                f.write(json.dumps(line) + "\n")
            if improved:
                self.save_weights(self.out / checkpoint.BEST_WEIGHTS, self.best_record())
        self.on_validated(val, line)

    def write(self, message: str) -> None:
        """A message on stderr that leaves the progress bar intact."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def train(self) -> dict:
        """Run to ``total_steps``; returns the last validation metrics. Stops early, with a
        checkpoint, on SIGINT/SIGTERM (``self.interrupted`` is then True)."""
        if self.out is not None and self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.interrupted = False
        self._bar = bar = _bar(self.step, self.total_steps, self.label) if self.progress else None
        self._t_last = time.perf_counter()
        try:
            with StopFlag() as flag:
                while self.step < self.total_steps:
                    loss, stop = self.train_step(flag.set)
                    self.pending_losses.append(loss)
                    self._tick()
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(self.postfix(loss), refresh=False)
                    self._snapshot()
                    scheduled = self.step % self.val_every == 0
                    if scheduled or self.step == self.total_steps:
                        self._after_validation(scheduled)
                        self.save_checkpoint()
                    elif stop:
                        self.save_checkpoint()
                    if stop:
                        self.interrupted = True
                        break
        finally:
            if bar is not None:
                bar.close()
            self._bar = None
        return dict(self.last_val)

    def postfix(self, loss: float) -> dict:
        """The progress bar's fields after a step."""
        return {"loss": f"{loss:.4g}", "lr": f"{self.lr():.2g}"}


class Trainer(Loop):
    """Trains ``model`` on ``data`` batches per ``cfg``; ``out`` is the run folder (None:
    nothing written, for tests and notebooks). ``record`` is merged into every weights
    file's record (e.g. the command line)."""

    def __init__(self, model, data: DataConfig, cfg: TrainConfig, dist: Optional[DistInfo] = None,
                 out=None, record: Optional[dict] = None, progress: bool = False,
                 keep_every: Optional[int] = None):
        cfg.validate()
        data.validate()
        self.model, self.data_cfg, self.cfg = model, data, cfg
        self.label = model.name
        self._setup(dist, out, record, progress, keep_every)
        self.real_dtype = cfg.DTYPES[cfg.dtype]
        self.model.to(self.dist.device)
        if self.real_dtype != torch.float32:   # e.g. GEPNet's published recipe trains in float64
            self.model.to(self.real_dtype)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError(f"{model.name}: the model has no trainable parameters")
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, mode="min", factor=cfg.lr_factor, patience=cfg.patience, min_lr=cfg.min_lr)
        self.data = BatchGenerator(data, cfg.seed, self.dist.rank)
        self._sync_initial_params()

    @property
    def total_steps(self) -> int:
        return self.cfg.steps

    @property
    def val_every(self) -> int:
        return self.cfg.val_every

    # --- state ------------------------------------------------------------------------------
    def _sync_initial_params(self) -> None:
        """Start every rank from rank 0's parameters (models may draw their init locally)."""
        if self.dist.world > 1:
            import torch.distributed as tdist
            with torch.no_grad():
                for p in self.model.state_dict().values():
                    tdist.broadcast(p, 0)

    def run_options(self) -> dict:
        return {"data": self.data_cfg.to_dict(), "train": self.cfg.run_defining(), "world": self.dist.world}

    def extra_state(self) -> dict:
        """The scheduler and every rank's data-generator and RNG states (a collective: all
        ranks must call it)."""
        per_rank = gather_objects({"data": self.data.state_dict(), "rng": checkpoint.rng_state(self.dist.device)},
                                  self.dist.world)
        return {"scheduler": self.sched.state_dict(), "ranks": per_rank}

    def load_extra_state(self, state: dict) -> None:
        self.sched.load_state_dict(state["scheduler"])
        mine_rank = state["ranks"][self.dist.rank]
        self.data.load_state_dict(mine_rank["data"])
        checkpoint.set_rng_state(mine_rank["rng"], self.dist.device)

    def load_weights(self, state: dict) -> None:
        checkpoint.load_weights(self.out, self.model, state)

    def save_weights(self, path, record: dict) -> None:
        weights.save(self.model, path, record)

    def record(self) -> dict:
        import mimo_fast
        return dict(self.record_extra, seed=self.cfg.seed, steps=self.step, wall_clock_s=round(self.elapsed, 3),
                    world_size=self.dist.world, device=str(self.dist.device), data=self.data_cfg.to_dict(),
                    train=self.cfg.to_dict(), best_step=self.best_step, torch=torch.__version__,
                    mimo_fast=mimo_fast.__version__, **{f"val_{k}": v for k, v in self.last_val.items()})

    def batch_samples(self) -> int:
        return self.cfg.batch * self.dist.world

    def metric(self, val: dict) -> float:
        return val[self.cfg.plateau_metric]

    def on_scheduled(self, metric: float) -> None:
        # validation n = step / val_every (1-based) reaches the scheduler when (n - 1) % plateau_every
        # == 0: a function of the step, so a resumed run makes the same decisions
        if (self.step // self.val_every - 1) % self.cfg.plateau_every == 0:
            self.sched.step(metric)

    def log_line(self, val: dict, train_loss: float) -> dict:
        return {"step": self.step, "loss": train_loss, "lr": self.lr(), "val_loss": val["loss"],
                "val_ser": val["ser"], "wall": round(self.elapsed, 3)}

    def postfix(self, loss: float) -> dict:
        return {"loss": f"{loss:.4g}", "lr": f"{self.lr():.2g}",
                "val_ser": f"{self.last_val.get('ser', float('nan')):.3g}"}

    # --- steps ------------------------------------------------------------------------------
    def train_step(self, stop: bool = False):
        """One optimiser step; returns ``(mean loss over ranks, any rank asked to stop)``."""
        b = self.data(self.cfg.batch).to(self.dist.device, self.real_dtype)
        self.opt.zero_grad(set_to_none=True)
        loss = self.model.training_loss(b.y, b.H, b.noise_var, b.x_idx, b.mask)
        loss.backward()
        lv = loss.detach().float()
        extra = torch.stack([lv.nan_to_num(0.0), (~torch.isfinite(lv)).float(),
                             torch.tensor(float(stop), device=lv.device)])
        extra = allreduce_grads(self.params, self.dist.world, extra)
        if extra[1] > 0:
            raise FloatingPointError(f"{self.model.name}: non-finite training loss at step {self.step + 1} "
                                     f"(lr {self.lr():.3g}); lower --lr or check the data options")
        if self.cfg.clip_grad is not None:
            # after the all-reduce: every rank clips the same averaged gradient
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad)
        self.opt.step()
        self.step += 1
        return float(extra[0]) / self.dist.world, bool(extra[2] > 0)

    @torch.no_grad()
    def validate(self) -> dict:
        """Loss and SER on the fixed validation set (summed over ranks)."""
        gen = BatchGenerator(self.data_cfg, self.cfg.seed, self.dist.rank, VAL_STREAM)
        was_training = self.model.training
        self.model.eval()
        acc = torch.zeros(4, dtype=torch.float64)
        for _ in range(self.cfg.val_batches):
            b = gen(self.cfg.batch).to(self.dist.device, self.real_dtype)
            loss = self.model.training_loss(b.y, b.H, b.noise_var, b.x_idx, b.mask)
            # a model that transmits with its own (learned) constellation re-sends the draw (e2e)
            y = self.model.retransmit(b.y, b.H, b.x_idx, b.mask)
            hard = self.model(y, b.H, b.noise_var, b.mask).hard
            n = b.y.shape[0]
            acc += torch.tensor([float(loss) * n, n, int(((hard != b.x_idx) & b.mask).sum()), int(b.mask.sum())],
                                dtype=torch.float64)
        self.model.train(was_training)
        acc = allreduce_sum(acc.to(self.dist.device), self.dist.world).cpu()
        return {"loss": float(acc[0] / acc[1]), "ser": float(acc[2] / acc[3])}


def _bar(initial: int, total: int, name: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(initial=initial, total=total, desc=f"train {name}", unit="step", file=sys.stderr,
                dynamic_ncols=True)


def _diff(saved: dict, mine: dict, prefix: str = "") -> str:
    parts = []
    for k in sorted(set(saved) | set(mine)):
        a, b = saved.get(k), mine.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = _diff(a, b, f"{prefix}{k}.")
            if sub:
                parts.append(sub)
        elif a != b:
            parts.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return ", ".join(parts)


def _truncate_log(path: pathlib.Path, step: int, val_every: int) -> None:
    """Drop log lines written after the checkpoint being resumed (they will be redone) and
    an end-of-run line off the validation schedule (the resumed run goes past it)."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        if not ln.strip():
            continue
        s = json.loads(ln).get("step")
        # a line without a step (a precoder log of an older version) is kept
        if s is None or s < step or (s == step and s % val_every == 0):
            keep.append(ln)
    atomic_write(path, lambda tmp: pathlib.Path(tmp).write_text("".join(k + "\n" for k in keep)))


__all__ = ["Loop", "Trainer", "TrainConfig", "StopFlag", "PLATEAU_METRICS", "SNAPSHOTS"]
