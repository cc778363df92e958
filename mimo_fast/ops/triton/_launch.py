"""Host-side launch logic shared by the Triton glue: block sizes, grids, batch chunking.

Nothing here imports Triton, so it is unit-tested without a GPU (tests/test_triton_launch.py).
Every grid puts the batch on axis 0 (CUDA allows 2**31 - 1 blocks there) and tiles of one
batch element on axis 1 (at most 65535); a batch larger than axis 0 allows is launched in
chunks of views, so each launch also addresses its own slice from a fresh base pointer.
"""
from __future__ import annotations

import contextlib
import os

import torch

#: CUDA's grid limits (blocks along x, and along y or z)
MAX_GRID_X = 2**31 - 1
MAX_GRID_YZ = 65535


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


def prev_pow2(n: int) -> int:
    """Largest power of two <= n (1 for n <= 1)."""
    return 1 << max(0, int(n).bit_length() - 1)


def block(n: int, lo: int = 16, hi: int = 1 << 30) -> int:
    """A power-of-two block covering n, clamped to [lo, hi]. lo = 16 because tl.dot needs
    every dimension >= 16 on NVIDIA GPUs; padding lanes are masked."""
    return max(lo, min(hi, next_pow2(n)))


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def batch_chunks(batch: int, limit: int | None = None) -> list[tuple[int, int]]:
    """[start, stop) slices of the batch, each at most ``limit`` (default MAX_GRID_X) long."""
    limit = MAX_GRID_X if limit is None else limit
    if limit < 1:
        raise ValueError(f"chunk limit must be >= 1, got {limit}")
    return [(s, min(batch, s + limit)) for s in range(0, batch, limit)]


def tiles_reason(what: str, tiles: int) -> str | None:
    """Why ``tiles`` programs per batch element cannot be launched on grid axis 1 (or None)."""
    if tiles > MAX_GRID_YZ:
        return f"{what} needs {tiles} programs per batch element, over CUDA's grid limit of {MAX_GRID_YZ}"
    return None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def num_programs(device: torch.device, work: int, per_sm: int = 2) -> int:
    """Programs for a persistent launch over ``work`` tiles (each program loops over tiles
    and keeps per-program partial sums): a few per SM on a GPU, a handful in the interpreter."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(work, per_sm * sms))
    return max(1, min(work, 3))


def shared_memory_limit(device: torch.device) -> int | None:
    """Shared memory one program may use on this CUDA device (bytes), None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensors' device."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()
