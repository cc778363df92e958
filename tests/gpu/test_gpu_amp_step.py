"""The cuda kernels of amp_step on a GPU, case by case, against the float64 reference
(marked ``gpu``; tests/gpu/gpu_support.py says how they run and skip).

The plain grid of sizes (M, N in 1, 7, 64, 300, 1024, both dtypes) is
tests/test_amp_step_cuda.py's ``test_gpu_matches_reference``; here are the launch choices it
does not reach, each forward and backward through the glue and run twice for the same
bits: the first iteration (z_prev = y), the row tile in global memory (a small shared-memory
opt-in), a grid cut into three launches, tall and wide H, and a row longer than the tile
budget. The op's own API on transposed (non-contiguous) inputs runs through
tests/op_checks.py. The launch configuration is in every failure message.
"""
from __future__ import annotations

import pytest
import torch

import mimo_fast.ops as ops
from gpu_support import EMU, EMULATE, MARKS, assert_matches, needs_device, optin, same_bits, sync, to_device
from op_checks import check_grads, check_values
from op_samples import Sample, amp_oracle, amp_sample

pytestmark = MARKS

F32, F64 = torch.float32, torch.float64
NAMES = ("r", "Sigma", "z", "V")
GRAD_NAMES = ("g_H", "g_y", "g_x", "g_v", "g_z_prev", "g_V_prev", "g_noise")


def case(B, M, N, dtype, *, max_blocks=0, smem_optin=None, first=False, seed=0):
    name = (f"{str(dtype)[6:]}-B{B}-{M}x{N}" + (f"-maxblocks{max_blocks}" if max_blocks else "")
            + (f"-optin{smem_optin}" if smem_optin else "") + ("-first" if first else ""))
    return pytest.param(dict(B=B, M=M, N=N, dtype=dtype, max_blocks=max_blocks, smem_optin=smem_optin, first=first,
                             seed=seed), id=name)


def cases():
    if EMULATE:   # tiny: one tile, partial tiles, N > 32 lanes, global-memory tile, chunked grid
        return [c for dtype in (F32, F64) for c in (
            [case(2, M, N, dtype, seed=M + N) for M, N in ((1, 1), (7, 40), (37, 3))]
            + [case(3, 20, 9, dtype, smem_optin=200, first=True), case(5, 20, 9, dtype, max_blocks=4)])]
    return [c for dtype in (F32, F64) for c in (
        case(5, 21, 6, dtype, first=True),
        case(3, 300, 64, dtype, smem_optin=256),        # the row tile in global memory
        case(50, 300, 7, dtype, max_blocks=40),         # 3 launches
        case(2, 2048, 64, dtype), case(2, 64, 4096, dtype),
        case(1, 5, 20000, dtype))]                      # a row over the tile budget: global memory


def upstream(outs, seed):
    """Random output gradients drawn on the CPU (seeded alike on every device)."""
    g = torch.Generator().manual_seed(seed)
    res = []
    for o in outs:
        t = torch.randn(*o.shape, 2 if o.is_complex() else 1, generator=g, dtype=torch.float64)
        t = torch.view_as_complex(t) if o.is_complex() else t[..., 0]
        res.append(t.to(device=o.device, dtype=o.dtype))
    return res


def up64(t):
    return t.to(torch.complex128) if t.is_complex() else t.double()


@pytest.mark.parametrize("c", cases())
def test_kernels_match_reference(c):
    from mimo_fast.ops.cuda import amp_step as glue
    from mimo_fast.ops.reference import amp_step as ref
    B, M, N, dtype = c["B"], c["M"], c["N"], c["dtype"]
    cfg = glue.launch_config(B, M, N, dtype, c["smem_optin"] or optin(), max_blocks=c["max_blocks"])
    where = (f"amp {str(dtype)[6:]} B={B} M={M} N={N} rows/tile {cfg['rows_per_tile']} tiles {cfg['row_tiles']} "
             f"{'smem' if cfg['tile_in_smem'] else 'gmem'} launches {cfg['launches']}")
    opts = dict(max_blocks=c["max_blocks"], smem_optin=c["smem_optin"], emulate=EMU)
    args = to_device(amp_sample("gpu", B, M, N, dtype, seed=c["seed"], first=c["first"]).args)
    got = glue.forward(*args, **opts)
    sync()
    d = [up64(a) for a in args]
    for name, a, b in zip(NAMES, got, ref.forward(*d)):
        assert_matches(a, b, dtype, f"{where}: {name}")
    ups = upstream(got, c["seed"] + 1)
    gotg = glue.backward(*ups, *args, **opts)
    for name, a, b in zip(GRAD_NAMES, gotg, ref.backward(*[up64(u) for u in ups], *d)):
        assert_matches(a, b, dtype, f"{where}: {name}")
    again, againg = glue.forward(*args, **opts), glue.backward(*ups, *args, **opts)
    assert same_bits(list(got) + list(gotg), list(again) + list(againg)), f"{where}: two runs gave different bits"


@needs_device
def test_op_autograd_on_transposed_inputs():
    """The op as users call it (dispatch, autograd) on inputs laid out batch-last in memory."""
    s = amp_sample("transposed", 2, 40, 12, F64, seed=8)   # small: amp_oracle loops in Python
    args = [a.transpose(0, -1).contiguous().transpose(0, -1) if a.dim() > 1 else a for a in to_device(s.args)]
    assert not args[0].is_contiguous()
    t = Sample("transposed", tuple(args))
    check_values(ops.amp_step, amp_oracle, t, "cuda")
    check_grads(ops.amp_step, amp_oracle, t, "cuda")
