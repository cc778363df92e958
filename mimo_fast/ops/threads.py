"""How many OpenMP threads the C++ (cpu backend) kernels use: torch's setting by default, or an
override for this process.

The override exists because changing torch's own setting is not free: with torch 2.13's
CPU build, ``torch.set_num_threads(2)`` followed by a batched ``torch.linalg.inv`` of
256x256 float64 matrices deadlocks inside MKL (reproduced without mimo_fast). Code that
wants the kernels on a different thread count (tests, benchmarks) uses
:func:`kernel_threads` instead of touching torch.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

_override: Optional[int] = None


def num_threads() -> int:
    """Threads the next kernel call will use."""
    return _override if _override is not None else max(1, torch.get_num_threads())


def set_kernel_threads(n: Optional[int]) -> None:
    """Use ``n`` threads in the C++ kernels from now on (None: follow torch again)."""
    global _override
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"kernel threads must be a positive int or None, got {n!r}")
    _override = n


@contextlib.contextmanager
def kernel_threads(n: Optional[int]) -> Iterator[None]:
    """``with kernel_threads(3): ...`` runs the C++ kernels on 3 threads inside the block."""
    global _override
    before = _override
    set_kernel_threads(n)
    try:
        yield
    finally:
        _override = before
