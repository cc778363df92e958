"""cuda backend of amp_step (csrc/amp_step/cuda/amp_step.cu).

Without a GPU: the launch configuration (tile rows, shared memory, chunking, workspace),
and the kernels themselves run in the host block emulator on CPU tensors, in both thread
orders, with one and several row tiles, the tile in shared or in global memory, and batch
chunking, against the reference forward and backward. With a GPU (skipped here): the op
on the device for M, N in {1, 7, 64, 300, 1024}, chunking, the global-memory tile and
bitwise determinism.
"""
import pytest
import torch

import mimo_fast.ops as ops
from mimo_fast import _ext
from mimo_fast.ops import registry
from mimo_fast.ops.reference import amp_step as ref
from op_checks import assert_close
from op_samples import amp_sample

C = _ext.C_CUDA
pytestmark = pytest.mark.skipif(C is None, reason=f"mimo_fast._C_cuda not built: {_ext.C_CUDA_REASON}")
if C is not None:
    from mimo_fast.ops.cuda import amp_step as glue

GPU = C is not None and registry.get_backend("cuda").unavailable() is None and torch.cuda.is_available()
gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU and the cuda backend")

H100 = 227 * 1024
F32, F64 = 0, 1
NAMES = ("r", "Sigma", "z", "V")
GRAD_NAMES = ("g_H", "g_y", "g_x", "g_v", "g_z_prev", "g_V_prev", "g_noise_var")


def cfg(B, M, N, dtype=F32, optin=H100, **kw):
    return C.amp_step_launch_config(B, M, N, dtype, optin, **kw)


# ------------------------------------------------------------------ launch configuration
@pytest.mark.parametrize("N,threads", [(1, 32), (7, 32), (33, 64), (64, 64), (300, 256), (1024, 256)])
def test_threads_follow_N(N, threads):
    assert cfg(2, 8, N)["threads"] == threads


def test_small_problem_is_one_tile_in_shared_memory():
    c = cfg(4, 7, 5)
    assert (c["rows_per_tile"], c["row_tiles"], c["tile_in_smem"]) == (7, 1, True)
    assert c["smem_bytes"] == 7 * 5 * 8 + 8 * 7 * 4 and not c["smem_optin_needed"]
    assert (c["blocks"], c["launches"], c["cols_blocks"]) == (4, 1, 1)


def test_tall_problem_has_partial_last_tile():
    c = cfg(3, 300, 64, F64)
    assert (c["rows_per_tile"], c["row_tiles"], c["blocks"]) == (16, 19, 57)


@pytest.mark.parametrize("dtype,isz,optin,rows,optin_needed", [
    (F64, 8, H100, 5, True),           # 96 KiB budget / (2*1024 + 8) * 8 B a row
    (F64, 8, 48 * 1024, 2, False),     # a device limit below the budget
    (F32, 4, H100, 11, True),
])
def test_rows_per_tile_fit_the_shared_memory_budget(dtype, isz, optin, rows, optin_needed):
    c = cfg(2, 1024, 1024, dtype, optin)
    assert c["rows_per_tile"] == rows and c["tile_in_smem"]
    assert c["smem_bytes"] == rows * 1024 * 2 * isz + 8 * rows * isz <= min(optin, 96 * 1024)
    assert c["smem_optin_needed"] == optin_needed and c["row_tiles"] == -(-1024 // rows)


def test_tile_in_global_memory_when_a_row_does_not_fit():
    c = cfg(2, 40, 300, F64, optin=4000)    # one row: (2 * 300 + 8) * 8 B > 4000
    assert not c["tile_in_smem"] and c["rows_per_tile"] == 16 and c["smem_bytes"] == 8 * 16 * 8
    c = cfg(2, 40, 300, F64, optin=200)     # the row scalars limit the rows too
    assert not c["tile_in_smem"] and c["rows_per_tile"] == 3 and c["smem_bytes"] == 8 * 3 * 8


def test_batch_chunking_and_grid_refusal():
    c = cfg(5, 300, 7, max_blocks=40)
    assert (c["row_tiles"], c["chunk"], c["launches"], c["blocks"]) == (19, 2, 3, 38)
    c = cfg(5, 300, 7, max_blocks=10)
    assert not c["fits"] and "19 row tiles" in c["reason"]


def test_workspace_sizes():
    B, M, N = 3, 40, 9
    c = cfg(B, M, N)
    T = c["row_tiles"]
    assert c["workspace_forward"] == 3 * B * T * N
    assert c["workspace_backward"] == 3 * B * T * N + 4 * B * M + 3 * B * N + B * T


@pytest.mark.parametrize("args,match", [((2, 0, 3, F32), "M, N >= 1"), ((2, 3, 0, F32), "M, N >= 1"),
                                        ((2, 3, 3, 5), "dtype"), ((-1, 3, 3, F32), "B >= 0")])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        C.amp_step_launch_config(*args, H100)


# ------------------------------------------------------------------ emulated kernels
def upstream(outs, seed):
    """Random output gradients, on the outputs' device (drawn on the CPU, so seeded alike)."""
    g = torch.Generator().manual_seed(seed)
    res = []
    for o in outs:
        t = torch.randn(*o.shape, 2 if o.is_complex() else 1, generator=g, dtype=torch.float64)
        t = torch.view_as_complex(t) if o.is_complex() else t[..., 0]
        res.append(t.to(device=o.device, dtype=o.dtype))
    return res


def double(t):
    return t.to(torch.complex128) if t.is_complex() else t.double()


def check(sample, **opts):
    """Forward and backward of the cuda kernels (emulated when opts has emulate) vs the reference."""
    args = sample.args
    dtype = args[3].dtype
    got = glue.forward(*args, **opts)
    want = ref.forward(*[double(a) for a in args])
    for name, g, w in zip(NAMES, got, want):
        assert g.dtype == (args[0].dtype if w.is_complex() else dtype)
        assert_close(g, w, "cuda", dtype, name)
    grads_out = upstream(got, seed=5)
    gotg = glue.backward(*grads_out, *args, **opts)
    wantg = ref.backward(*[double(a) for a in grads_out], *[double(a) for a in args])
    for name, g, w in zip(GRAD_NAMES, gotg, wantg):
        assert_close(g, w, "cuda", dtype, name)


EMULATED = [  # (B, M, N, options): one tile, tiles with a partial last one, N > 32 lanes,
    (2, 1, 1, {}), (2, 7, 5, {}), (1, 37, 3, {}), (2, 5, 40, {}), (1, 40, 33, {}),
    (2, 20, 9, dict(smem_optin=200)),       # tile in global memory, 3 rows a tile
    (5, 20, 9, dict(max_blocks=4)),         # 2 tiles a batch element, 2 per launch: 3 launches
    (3, 33, 70, dict(smem_optin=3000)),     # 2 rows a tile (70 complex128 a row = 1.1 KiB)
]


@pytest.mark.parametrize("B,M,N,opts", EMULATED, ids=[f"{b}x{m}x{n}-{'-'.join(o) or 'plain'}" for b, m, n, o in EMULATED])
@pytest.mark.parametrize("order", [0, 1])
def test_emulated_kernels_match_reference(B, M, N, opts, order):
    check(amp_sample("emu", B, M, N, torch.float64, seed=M + N), emulate=order, **opts)


def test_emulated_float32_first_iteration_and_non_contiguous():
    check(amp_sample("f32", 2, 21, 6, torch.float32, seed=1, first=True), emulate=0)
    check(amp_sample("nc", 2, 6, 4, torch.float64, seed=2, noncontig=True), emulate=1)
    check(amp_sample("f32-global", 2, 9, 4, torch.float32, seed=3), emulate=0, smem_optin=50)


def test_emulated_conjugate_views_and_empty_batch():
    s = amp_sample("c", 2, 5, 3, torch.float64, seed=4)
    H, y, x, v, zp, Vp, s2 = s.args
    args = (H.conj().resolve_conj().conj(), y, x.conj().resolve_conj().conj(), v, zp, Vp, s2)
    assert args[0].is_conj()
    got = glue.forward(*args, emulate=0)
    want = ref.forward(*s.args)
    for name, g, w in zip(NAMES, got, want):
        assert_close(g, w, "cuda", torch.float64, name)
    empty = amp_sample("e", 0, 3, 2, torch.float64).args
    assert [t.shape for t in glue.forward(*empty, emulate=0)] == [(0, 2), (0, 2), (0, 3), (0, 3)]


# ------------------------------------------------------------------ on a GPU
SIZES = [1, 7, 64, 300, 1024]


@gpu
@pytest.mark.parametrize("M", SIZES)
@pytest.mark.parametrize("N", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpu_matches_reference(M, N, dtype):
    s = amp_sample("gpu", 3, M, N, dtype, seed=M * 7 + N)
    s.args = tuple(a.cuda() for a in s.args)
    check(s)


@gpu
def test_gpu_op_autograd_chunks_global_tile_and_determinism():
    s = amp_sample("op", 50, 300, 64, torch.float32, seed=9)
    args = [a.cuda().requires_grad_() if a.is_floating_point() or a.is_complex() else a.cuda() for a in s.args]
    outs = ops.amp_step(*args, backend="cuda")
    want = ops.amp_step(*args, backend="reference")
    for name, g, w in zip(NAMES, outs, want):
        assert_close(g, w, "cuda", torch.float32, name)
    plain = [a.detach() for a in args]
    base = glue.forward(*plain)
    for opts in (dict(max_blocks=40), dict(smem_optin=256)):
        for a, b in zip(base, glue.forward(*plain, **opts)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(base, glue.forward(*plain)))
    up = upstream(base, seed=1)
    g1, g2 = glue.backward(*up, *plain), glue.backward(*up, *plain)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
