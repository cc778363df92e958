"""Host-side launch logic of the `triton` backend, without a GPU: block-size choices,
grids, batch chunking past CUDA's grid limit, and refusals with their reasons.

Most tests swap each glue module's kernels for a recorder (nothing is executed, Triton is
not needed, and meta tensors stand in for batches far too large to allocate); the last
ones run the real kernels in Triton's interpreter with a tiny grid limit, so the chunked
launches are checked against the reference too.
"""
import importlib.util

import pytest
import torch

import mimo_fast.ops as ops
from mimo_fast.ops import registry
from mimo_fast.ops.triton import _launch as L
from mimo_fast.ops.triton import amp_step as amp_glue
from mimo_fast.ops.triton import ep_lmmse as ep_glue
from mimo_fast.ops.triton import mpnn_message_sum as mpnn_glue
from op_samples import amp_sample, ep_sample, mpnn_sample

HAS_TRITON = importlib.util.find_spec("triton") is not None


class Recorder:
    """Stands in for a kernels module: ``rec.<kernel>[grid](*args, **meta)`` records the launch."""

    def __init__(self):
        self.launches = []

    def __getattr__(self, name):
        rec = self

        class _Kernel:
            def __getitem__(self, grid):
                return lambda *args, **meta: rec.launches.append((name, tuple(grid), meta))
        return _Kernel()

    def grids(self, name):
        return [g for n, g, _ in self.launches if n == name]


@pytest.fixture
def rec(monkeypatch):
    r = Recorder()
    for glue in (ep_glue, amp_glue, mpnn_glue):
        monkeypatch.setattr(glue, "_kernels", lambda: r)
    return r


# ------------------------------------------------------------------ helpers
@pytest.mark.parametrize("n,p2,prev", [(0, 1, 1), (1, 1, 1), (2, 2, 2), (3, 4, 2), (16, 16, 16), (17, 32, 16), (1000, 1024, 512)])
def test_powers_of_two(n, p2, prev):
    assert L.next_pow2(n) == p2 and L.prev_pow2(n) == prev


def test_block_is_at_least_16_for_tl_dot_and_clamped():
    assert L.block(1) == 16 and L.block(17) == 32 and L.block(1000, hi=128) == 128


def test_batch_chunks():
    assert L.batch_chunks(0) == []
    assert L.batch_chunks(5) == [(0, 5)]
    assert L.batch_chunks(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert L.batch_chunks(L.MAX_GRID_X + 3) == [(0, L.MAX_GRID_X), (L.MAX_GRID_X, L.MAX_GRID_X + 3)]
    with pytest.raises(ValueError, match="chunk limit"):
        L.batch_chunks(4, 0)


def test_tiles_reason():
    assert L.tiles_reason("x", L.MAX_GRID_YZ) is None
    assert "over CUDA's grid limit of 65535" in L.tiles_reason("x", L.MAX_GRID_YZ + 1)


def test_persistent_programs_on_cpu():
    assert L.num_programs(torch.device("cpu"), 1) == 1
    assert L.num_programs(torch.device("cpu"), 100) == 3


# ------------------------------------------------------------------ ep_lmmse
@pytest.mark.parametrize("K,KP,warps", [(1, 16, 2), (16, 16, 2), (17, 32, 4), (33, 64, 8), (64, 64, 8)])
def test_ep_blocks(K, KP, warps):
    assert ep_glue.blocks(K) == (KP, warps) == ep_glue.blocks(K, 8, backward=True)


def test_ep_float32_backward_at_64_gets_more_warps():
    assert ep_glue.blocks(64, 4, backward=True) == (64, 16)


def test_ep_refuses_large_K_with_reason():
    big = torch.empty(2, 65, 65), torch.empty(2, 65)
    assert "K=65 > 64" in ep_glue.refuse(*big) and "registers" in ep_glue.refuse(*big)
    assert ep_glue.refuse(torch.empty(2, 64, 64), torch.empty(2, 64)) is None


def test_ep_one_program_per_matrix(rec):
    s = ep_sample("g", 5, 7, torch.float32)
    ep_glue.forward(*s.args)
    ep_glue.backward(s.args[1], s.args[1], *s.args)
    assert rec.grids("ep_lmmse_fwd_kernel") == [(5,)] and rec.grids("ep_lmmse_bwd_kernel") == [(5,)]
    assert all(m == {"KP": 16, "num_warps": 2} for _, _, m in rec.launches)


def test_mpnn_dot_precision_and_stages():
    assert mpnn_glue.blocks(16, 128, 64, 2, 4)["PREC"] == "tf32x3"
    assert mpnn_glue.blocks(16, 128, 64, 2, 8)["PREC"] == "ieee"
    assert mpnn_glue.blocks(16, 128, 64, 2, 4)["num_stages"] == 1


def test_ep_chunks_a_batch_past_the_grid_limit(rec):
    B = L.MAX_GRID_X + 3                               # meta tensors: nothing is allocated
    gram, vec = torch.empty(B, 4, 4, device="meta"), torch.empty(B, 4, device="meta")
    ep_glue.forward(gram, vec, vec, vec)
    assert rec.grids("ep_lmmse_fwd_kernel") == [(L.MAX_GRID_X,), (3,)]


# ------------------------------------------------------------------ amp_step
def test_amp_blocks():
    assert amp_glue.blocks(4, 3) == dict(ROW_BM=16, ROW_BN=16, COL_BM=16, COL_BN=16)
    assert amp_glue.blocks(1024, 1024) == dict(ROW_BM=16, ROW_BN=64, COL_BM=64, COL_BN=32)


def test_amp_grids_rows_then_columns(rec):
    s = amp_sample("g", 2, 100, 40, torch.float32)
    amp_glue.forward(*s.args)
    assert [n for n, _, _ in rec.launches] == ["amp_rows_kernel", "amp_cols_kernel"]
    assert rec.grids("amp_rows_kernel") == [(2, 7)] and rec.grids("amp_cols_kernel") == [(2, 2)]
    rec.launches.clear()
    H, y, x, v, zp, Vp, nv = s.args
    amp_glue.backward(x, v, y, Vp, *s.args)
    assert [n for n, _, _ in rec.launches] == ["amp_rows_kernel", "amp_cols_kernel",
                                               "amp_rows_bwd_kernel", "amp_cols_bwd_kernel"]


def test_amp_refuses_more_row_tiles_than_grid_axis_1_holds():
    H = torch.empty(1, 16 * L.MAX_GRID_YZ + 1, 2, dtype=torch.complex64, device="meta")
    assert "row pass needs 65536 programs" in amp_glue.refuse(H)
    assert amp_glue.refuse(torch.empty(1, 64, 64, dtype=torch.complex64, device="meta")) is None


def test_amp_chunks_a_batch_past_the_grid_limit(rec, monkeypatch):
    monkeypatch.setattr(L, "MAX_GRID_X", 2)
    amp_glue.forward(*amp_sample("c", 5, 6, 4, torch.float32).args)
    assert rec.grids("amp_rows_kernel") == [(2, 1), (2, 1), (1, 1)]


# ------------------------------------------------------------------ mpnn_message_sum
@pytest.mark.parametrize("N,H1,H2,itemsize,backward,rows,BJ", [
    (16, 128, 64, 4, False, 64, 16),    # S1: 4 receivers x 16 senders per step
    (64, 16, 8, 4, False, 256, 64),     # S2
    (256, 64, 32, 4, False, 128, 128),  # S3: one receiver, senders in two steps
    (256, 64, 32, 8, False, 16, 16),    # float64: an eighth of the rows (broadcast products, no tl.dot)
    (256, 64, 32, 4, True, 32, 32),     # backward: a quarter
    (1, 4, 4, 4, False, 16, 16),        # at least 16 rows for tl.dot
    (3, 4, 4, 8, True, 16, 4),
])
def test_mpnn_blocks(N, H1, H2, itemsize, backward, rows, BJ):
    bl = mpnn_glue.blocks(N, H1, H2, 2, itemsize, backward)
    assert bl["BN"] * bl["BJ"] == rows and bl["BJ"] == BJ
    assert bl["BH1"] >= max(16, H1) and bl["BH2"] >= max(16, H2) and bl["BE"] == 16 and bl["BFO"] == 16


@pytest.mark.parametrize("Fo,BFO,rows", [(0, 16, 128), (3, 16, 128), (17, 32, 128), (128, 128, 64), (300, 128, 64)])
def test_mpnn_relu_blocks_count_the_w3_tile(Fo, BFO, rows):
    """"relu" tiles are (rows, BFO) too: a wide Fo takes rows from the budget like a wide H."""
    bl = mpnn_glue.blocks(256, 64, 32, 2, 4, Fo=Fo)
    assert bl["BFO"] == BFO and bl["BN"] * bl["BJ"] == rows


def test_mpnn_refusals_name_the_limit():
    node, edge = torch.empty(1, 4, 2), torch.empty(1, 4, 4, 2)
    w = lambda h1, h2: (torch.empty(h1, 6), torch.empty(h1), torch.empty(h2, h1))  # noqa: E731
    assert "hidden width 257 > 256" in mpnn_glue.refuse(node, edge, *w(257, 8))
    assert "hidden width 300 > 256" in mpnn_glue.refuse(node, edge, *w(8, 300))
    assert "E=129 > 128" in mpnn_glue.refuse(node, torch.empty(1, 4, 4, 129), *w(8, 8))
    assert mpnn_glue.refuse(node, edge, *w(256, 256)) is None
    assert mpnn_glue.refuse(node, edge) is None        # dispatch that passes only (node, edge)
    # any Fo is served: "relu" runs a wide W3 in row blocks of at most FO_BLOCK_MAX
    w3 = torch.empty(1000, 8), torch.empty(1000)
    assert mpnn_glue.refuse(node, edge, *w(8, 8), torch.empty(8), *w3) is None


def test_mpnn_refuses_what_the_gpu_has_no_shared_memory_for(monkeypatch):
    node, edge = torch.empty(1, 4, 2), torch.empty(1, 4, 4, 2)
    w = lambda h1, h2, fo=4: (torch.empty(h1, 6), torch.empty(h1), torch.empty(h2, h1),  # noqa: E731
                              torch.empty(h2), torch.empty(fo, h2), torch.empty(fo))
    assert L.shared_memory_limit(torch.device("cpu")) is None
    monkeypatch.setattr(L, "shared_memory_limit", lambda device: 163 * 1024)     # an sm_80 GPU
    assert "this GPU offers 163 KiB" in mpnn_glue.refuse(node, edge, *w(128, 64))
    assert mpnn_glue.refuse(node, edge, *w(64, 64)) is None
    assert mpnn_glue.refuse(node, edge, *w(64, 64, 1000)) is None    # Fo only sets the W3 block
    monkeypatch.setattr(L, "shared_memory_limit", lambda device: 227 * 1024)     # sm_90
    assert mpnn_glue.refuse(node, edge, *w(128, 64)) is None
    assert "KiB of shared memory" in mpnn_glue.refuse(node, edge, *w(128, 128))


def test_mpnn_backward_shared_memory_counts_w3():
    base = mpnn_glue.backward_shared_memory(128, 64)
    assert base < mpnn_glue.backward_shared_memory(128, 64, 16) < mpnn_glue.backward_shared_memory(128, 64, 128)
    assert mpnn_glue.backward_shared_memory(128, 64, 1000) == mpnn_glue.backward_shared_memory(128, 64, 128)


def test_mpnn_fo_block_halves_to_fit_shared_memory(monkeypatch):
    cpu = torch.device("cpu")
    assert mpnn_glue.fo_block(5, 128, 64, cpu) == 5 and mpnn_glue.fo_block(1000, 128, 64, cpu) == 128
    monkeypatch.setattr(L, "shared_memory_limit", lambda device: 227 * 1024)     # sm_90
    fo = mpnn_glue.fo_block(1000, 128, 64, cpu)
    assert 16 <= fo < 128 and mpnn_glue.backward_shared_memory(128, 64, fo) <= 227 * 1024
    assert mpnn_glue.backward_shared_memory(128, 64, 2 * fo) > 227 * 1024
    assert mpnn_glue.fo_block(1000, 16, 16, cpu) == 128


def _pair_args(s):
    """A sample's arguments as the op module hands them to the pair kernels."""
    from mimo_fast.ops.mpnn_message_sum import _project
    node, edge, w1, b1, w2, b2, w3, b3, mask = s.args
    recv, send, we = _project(node, w1, b1)
    return recv, send, edge, we, w2, b2, w3, b3, mask


@pytest.mark.parametrize("relu", [False, True])
def test_mpnn_grids(rec, relu):
    s = mpnn_sample("g", 5, 40, 3, 2, 32, 16, 4, torch.float32)
    mpnn_glue.forward(*_pair_args(s), relu)
    bl = mpnn_glue.blocks(40, 32, 16, 2, 4, Fo=4 if relu else 0)
    assert rec.grids("mpnn_fwd_kernel") == [(5, L.cdiv(40, bl["BN"]))]
    meta = rec.launches[0][2]
    assert meta["HAS_EDGE"] and not meta["HAS_MASK"] and meta["RELU_OUT"] == relu
    pg = mpnn_glue.backward(torch.ones(5, 40, 4 if relu else 16), *_pair_args(s), relu)
    assert rec.grids("mpnn_bwd_kernel") == [(3,)]      # persistent: 3 programs on the CPU
    assert rec.launches[-1][2]["RELU_OUT"] == relu
    assert (pg.s is None) == relu and (pg.gw3 is not None) == relu and (pg.gb3 is not None) == relu
    if relu:
        assert pg.gw3.shape == (4, 16) and pg.gb3.shape == (4,)
    else:
        assert pg.s.shape == (5, 40, 16)


def test_mpnn_wide_fo_runs_in_w3_row_blocks(rec):
    s = mpnn_sample("g", 2, 6, 3, 2, 8, 8, 300, torch.float32)
    out = mpnn_glue.forward(*_pair_args(s), True)
    assert out.shape == (2, 6, 300) and len(rec.grids("mpnn_fwd_kernel")) == 3
    assert [m["BFO"] for _, _, m in rec.launches] == [128, 128, 64]   # 128 + 128 + 44
    rec.launches.clear()
    pg = mpnn_glue.backward(torch.ones(2, 6, 300), *_pair_args(s), True)
    assert len(rec.grids("mpnn_bwd_kernel")) == 3 and pg.gw3.shape == (300, 8)
    # "none" never blocks W3: the kernels do not touch it
    rec.launches.clear()
    mpnn_glue.forward(*_pair_args(s), False)
    assert len(rec.grids("mpnn_fwd_kernel")) == 1


# ------------------------------------------------------------------ real chunked launches
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")


def _grads(fn, args, backend, kwargs=None):
    args = [a.detach().clone().requires_grad_() if a is not None and (a.is_floating_point() or a.is_complex())
            else a for a in args]
    outs = fn(*args, **(kwargs or {}), backend=backend)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o.abs() if o.is_complex() else o).square().sum() for o in outs)
    leaves = [a for a in args if a is not None and a.requires_grad]
    return outs, torch.autograd.grad(loss, leaves)


@needs_triton
@pytest.mark.parametrize("fn,sample", [
    (ops.ep_lmmse, ep_sample("c", 5, 3, torch.float64)),
    (ops.amp_step, amp_sample("c", 5, 4, 3, torch.float64)),
    (ops.mpnn_message_sum, mpnn_sample("c", 5, 3, 2, 1, 4, 4, 2, torch.float64,
                                       mask=torch.rand(5, 3, generator=torch.Generator().manual_seed(1)) > 0.3)),
    (ops.mpnn_message_sum, mpnn_sample("c", 5, 3, 2, 1, 4, 4, 2, torch.float64, out_act="relu",
                                       mask=torch.rand(5, 3, generator=torch.Generator().manual_seed(1)) > 0.3)),
], ids=["ep_lmmse", "amp_step", "mpnn_message_sum", "mpnn_message_sum-relu"])
def test_chunked_launches_match_reference(fn, sample, monkeypatch):
    why = registry.get_backend("triton").refusal(fn.__name__, tuple(a for a in sample.args if a is not None), True)
    if why:
        pytest.skip(f"triton cannot run here: {why}")
    monkeypatch.setattr(L, "MAX_GRID_X", 2)            # 5 batch elements -> 3 launches
    got, g_got = _grads(fn, sample.args, "triton", sample.kwargs)
    want, g_want = _grads(fn, sample.args, "reference", sample.kwargs)
    for a, b in zip((*got, *g_got), (*want, *g_want)):
        torch.testing.assert_close(a, b)


@needs_triton
def test_mpnn_relu_w3_row_blocks_match_reference(monkeypatch):
    """A Fo wider than FO_BLOCK_MAX runs as several launches: their outputs are
    concatenated, their gradients (grecv, gedge and the atomic gsend) add up."""
    monkeypatch.setattr(mpnn_glue, "FO_BLOCK_MAX", 16)
    s = mpnn_sample("w", 2, 3, 2, 1, 4, 4, 20, torch.float64, out_act="relu", mask=torch.tensor([[1, 1, 1], [1, 0, 1]]).bool())
    assert len(mpnn_glue._fo_chunks(True, s.args[6], 4, 4)) == 2
    got, g_got = _grads(ops.mpnn_message_sum, s.args, "triton", s.kwargs)
    want, g_want = _grads(ops.mpnn_message_sum, s.args, "reference", s.kwargs)
    for a, b in zip((*got, *g_got), (*want, *g_want)):
        torch.testing.assert_close(a, b)
