"""Device facts and call plumbing shared by the `cuda` glue modules: the shared-memory
limit a block may opt into, torch's current stream as an integer handle, and the host
emulator switch (``emulate=0/1`` runs the same launches on CPU tensors, for tests
without a GPU; see csrc/common/cuda/block_emulator.h). Arguments travel to the kernels as one
block built by :mod:`mimo_fast.ops.native`."""
from __future__ import annotations

import contextlib
import functools

import torch

#: Shared memory per block an H100 allows with the opt-in (bytes); the default limit
#: the host emulator assumes, so emulated launches are configured as on that GPU.
H100_SMEM_OPTIN = 227 * 1024


def real_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype.to_real() if t.dtype.is_complex else t.dtype


@functools.lru_cache(maxsize=None)
def _optin(index: int) -> int:
    return torch.cuda.get_device_properties(index).shared_memory_per_block_optin


def smem_optin(device: torch.device, emulate: int = -1) -> int:
    """Dynamic shared memory one block may use on ``device`` with the opt-in (bytes)."""
    if emulate >= 0:
        return H100_SMEM_OPTIN
    return _optin(device.index if device.index is not None else torch.cuda.current_device())


def stream_handle(device: torch.device, emulate: int = -1) -> int:
    """torch's current stream on ``device`` as the integer the kernels take (0 when emulating)."""
    return 0 if emulate >= 0 else torch.cuda.current_stream(device).cuda_stream


def block_device(emulate: int) -> "str | None":
    """The device the marshaller checks tensors against: the signature's (cuda), or the
    CPU when the host emulator runs the launches."""
    return "cpu" if emulate >= 0 else None


def on_device(device: torch.device, emulate: int = -1):
    """Launch with ``device`` current (cudaFuncSetAttribute and launches act on it)."""
    return contextlib.nullcontext() if emulate >= 0 else torch.cuda.device(device)
