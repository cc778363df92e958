"""What the tests in tests/gpu share: the device they run on, why they skip, and the
comparisons (values with NaN patterns, bitwise determinism).

The tests here check the `cuda` (and, for mpnn_message_sum, `triton`) kernels case by case
on a GPU, at many more shapes, launch paths and batch chunkings than the generic op tests
(tests/test_<op>.py run tests/op_samples.py's samples on CUDA tensors too), with the launch
geometry in every failure message. They are marked ``gpu`` and skip without a CUDA device::

    pytest -m gpu tests/gpu          # on a GPU machine, after `pip install .`

``MIMO_FAST_GPU_TESTS=emulate`` runs their small cases on the CPU instead, through the host
emulators of the same kernels (ep_lmmse, amp_step: csrc/common/cuda/block_emulator.h inside
mimo_fast._C_cuda; mpnn_message_sum: tests/cuda_emulation/): a check of these tests
themselves on a machine without a GPU, not of the GPU.
"""
from __future__ import annotations

import os

import pytest
import torch

from mimo_fast import _ext
from mimo_fast.ops import registry
from op_checks import assert_close

EMULATE = os.environ.get("MIMO_FAST_GPU_TESTS", "") == "emulate"
#: the kernels' ``emulate`` argument: -1 launches on the GPU, 0 runs the host emulator
EMU = 0 if EMULATE else -1
DEV = torch.device("cpu" if EMULATE else "cuda")


def _skip_reason():
    if _ext.C_CUDA is None:
        return f"mimo_fast._C_cuda is not built ({_ext.C_CUDA_REASON})"
    if EMULATE:
        return None
    if not torch.cuda.is_available():
        return ("no CUDA device (MIMO_FAST_GPU_TESTS=emulate runs the small cases through the "
                "host emulators instead)")
    return registry.get_backend("cuda").unavailable()


SKIP_REASON = _skip_reason()
#: every module's pytestmark: marked `gpu`, skipped (saying why) where it cannot run
MARKS = [pytest.mark.gpu, pytest.mark.skipif(SKIP_REASON is not None, reason=f"GPU tests: {SKIP_REASON}")]
#: for checks that need the real device (the op's dispatch, refusals, gradcheck, compile)
needs_device = pytest.mark.skipif(EMULATE, reason="needs a real GPU (not run under MIMO_FAST_GPU_TESTS=emulate)")


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def optin() -> int:
    """Shared memory per block with the opt-in (what the glue passes the kernels)."""
    if EMULATE:
        return 227 * 1024
    return torch.cuda.get_device_properties(DEV).shared_memory_per_block_optin


def to_device(args):
    """The sample's tensors on DEV (non-contiguous ones stay non-contiguous: op_samples' _to_cuda)."""
    from op_samples import _to_cuda
    return [(_to_cuda(a) if DEV.type == "cuda" else a) for a in args]


def _real(t):
    return torch.view_as_real(t) if t.is_complex() else t


def assert_matches(got, want, dtype, what, backend="cuda"):
    """``got`` against the float64 ``want`` within the backend's tolerance (tests/op_checks.py),
    NaN where and only where ``want`` has NaN (a non-positive-definite matrix's row)."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    g, w = _real(got.detach()), _real(want.detach())
    nan_g, nan_w = g.isnan(), w.isnan()
    if not torch.equal(nan_g, nan_w):
        first = (nan_g != nan_w).nonzero()[0].tolist()
        raise AssertionError(f"{what}: NaN pattern differs in {int((nan_g != nan_w).sum())} elements, first at {first}")
    if nan_w.any():
        g, w = g[~nan_w], w[~nan_w]
    if w.numel():
        assert_close(g, w, backend, dtype, what)


def same_bits(xs, ys) -> bool:
    """Bitwise equal, NaN included: the cuda kernels are deterministic."""
    return all(x.shape == y.shape and torch.equal(x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8))
               for x, y in zip(xs, ys))
