"""torch.distributed setup and teardown for data-parallel training under ``torchrun``.

``torchrun --nproc-per-node K -m mimo_fast.cli train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them and starts a
process group: gloo for CPU training, nccl for CUDA (one GPU per local rank). Without
those variables it is a single process (rank 0 of 1) and nothing is initialised.

Gradients are averaged with one ``all_reduce`` over a flat buffer
(:func:`allreduce_grads`), not a DDP wrapper, so the model's ``state_dict`` keeps its own
names and any :class:`~mimo_fast.detect.learned.LearnedDetector` works unchanged.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import torch
import torch.distributed as dist


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    started: bool = False          # this process initialised the group (and tears it down)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> Optional[int]:
    v = os.environ.get(name)
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an int, got {v!r}") from None


def setup(device: Optional[str] = None) -> DistInfo:
    """Start the process group when run under torchrun; pick this rank's device.

    ``device``: ``"cpu"``, ``"cuda"`` (each rank takes ``cuda:LOCAL_RANK``), ``"cuda:N"``
    (single process only) or None (CUDA when available, else CPU).
    """
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available in this torch build/machine")
    if rank is None or world is None:
        return DistInfo(device=dev)
    local = rank if local is None else local
    if dev.type == "cuda":
        if dev.index is not None and world > 1:
            raise ValueError(f"device {device!r}: under torchrun pass --device cuda; each rank "
                             "uses cuda:LOCAL_RANK")
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    started = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
        started = True
    return DistInfo(rank=rank, world=world, local_rank=local, device=dev, started=started)


def teardown(info: DistInfo) -> None:
    if info.started and dist.is_initialized():
        close_group()


def close_group(timeout_s: float = 60.0) -> None:
    """Wait for every rank, then destroy the process group. Without the barrier a rank
    that finishes first (rank 0 still writing files) can tear gloo down under its peer,
    which then aborts at exit ("terminate called without an active exception": seen once
    in CI on the 2-rank test). A peer that already failed makes the barrier raise after
    ``timeout_s``; the group is destroyed anyway."""
    import datetime
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s))
        else:
            dist.barrier()
    except RuntimeError:
        pass
    dist.destroy_process_group()


def allreduce_grads(params, world: int, extra: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """Average the gradients of ``params`` over ranks in one flat all_reduce; a parameter
    without a gradient counts as zeros (every rank must join the same collective).
    ``extra`` (a small float tensor) is summed along in the same message and returned."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if world <= 1:
        return extra
    parts = [p.grad.reshape(-1) for p in params]
    dtype = parts[0].dtype if parts else torch.float32
    if extra is not None:
        parts.append(extra.to(dtype=dtype, device=parts[0].device if parts else extra.device))
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    off = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[off:off + n].view_as(p.grad)).div_(world)
        off += n
    return flat[off:] if extra is not None else None


def allreduce_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


def gather_objects(obj, world: int) -> list:
    """Every rank's ``obj`` (a list on every rank; ``[obj]`` in a single process)."""
    if world <= 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


__all__ = ["DistInfo", "setup", "teardown", "allreduce_grads", "allreduce_sum", "gather_objects"]
