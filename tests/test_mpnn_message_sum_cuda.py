"""The `cuda` backend of mpnn_message_sum.

Launch geometry (host code, no GPU needed; skipped when mimo_fast._C_cuda was not built), for
both out_act forms: tile shapes, Fo chunks, shared memory against the device's limits, grids
and their chunking, partial buffers, refusals. Then, on a GPU only, for "none" and "relu":
values and gradients against the reference at S1-S3-like shapes (smaller batches), masks
with fully masked graphs, N = 1, E = 0, float64, gradcheck, bitwise determinism, the
caller's stream, and the backend's place in dispatch. The kernels' arithmetic also runs
without a GPU in test_mpnn_message_sum_cuda_emulation.py.
"""
from __future__ import annotations

import pytest
import torch

import mimo_fast.ops as ops
from mimo_fast import _ext
from mimo_fast.ops import registry
from op_checks import assert_close
from op_samples import mpnn_sample

pytestmark = pytest.mark.skipif(_ext.C_CUDA is None, reason=f"no CUDA extension: {_ext.C_CUDA_REASON}")
HAS_GPU = torch.cuda.is_available() and _ext.C_CUDA is not None and _ext.cuda_device_reason() is None
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and mimo_fast._C_cuda")

H100 = dict(sm_count=132, smem_block=232448, smem_sm=233472)
A100 = dict(sm_count=108, smem_block=166912, smem_sm=167936)
S = {"S1": (1024, 16, 16, 2, 128, 64, 16), "S2": (256, 64, 8, 2, 16, 8, 8), "S3": (32, 256, 16, 2, 64, 32, 16)}
ACTS = ("none", "relu")


def cfg(B, N, F, E, H1, H2, Fo, dtype=0, dev=H100, relu=False, **kw):
    """The launch config of a (B, N, F, E, H1, H2, Fo) problem (F does not enter it)."""
    return _ext.C_CUDA.mpnn_message_sum_launch_config(B, N, E, H1, H2, Fo, dtype, relu, **dev, **kw)


# ------------------------------------------------------------------ launch geometry
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dev", [H100, A100], ids=["H100", "A100"])
@pytest.mark.parametrize("dtype", [0, 1], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", list(S.values()) + [(3, 1, 2, 0, 4, 3, 2), (7, 5, 3, 9, 17, 33, 4), (2, 300, 4, 2, 128, 64, 8)],
                         ids=list(S) + ["N1-E0", "odd", "N300"])
def test_tile_geometry_is_consistent(shape, dtype, dev, act):
    B, N, F, E, H1, H2, Fo = shape
    relu = act == "relu"
    c = cfg(*shape, dtype, dev, relu=relu)
    assert c["refusal"] == "" and c["relu"] == relu
    H1P, H2P, FoP = c["H1P"], c["H2P"], c["FoP"]
    assert H1P >= max(16, H1) and H1P & (H1P - 1) == 0 and H2P >= max(8, H2) and H2P & (H2P - 1) == 0
    assert FoP >= max(4, Fo) and FoP & (FoP - 1) == 0
    for t in (c["fwd"], c["bwd"]):
        assert t["TC"] * t["TN"] == H2P and t["TC"] * t["TR"] == c["threads"] == 256
        assert t["BM"] == t["TR"] * t["TM"] == t["RN"] * t["BJ"]
        assert t["BJ"] % t["TM"] == 0                      # a thread's rows share one receiver
        assert t["BJ"] >= N or t["RN"] == 1                # senders in one tile, or streamed for one receiver
        assert t["smem"] <= dev["smem_block"]
    f, b = c["fwd"], c["bwd"]
    assert f["blocks"] == -(-B * N // f["RN"]) and f["launches"] == (1 if B else 0) and f["grid"] == f["blocks"]
    assert 32 <= b["BM"] <= 256 and b["TN"] == 4
    assert b["RG"] % b["RN"] == 0 and b["G"] == -(-N // b["RG"]) and b["items"] == B * b["G"]
    assert 1 <= b["blocks"] <= min(max(b["items"], 1), 2 * dev["sm_count"])
    assert b["S"] == max(1, 256 // ((H2P // 4) * (b["CW"] // 4))) and b["CW"] == min(H1P, 64)
    for t in (f, b):  # the Fo chunk: a power of two 4..FoP for "relu", unused (0) for "none"
        assert (4 <= t["FC"] <= FoP and t["FC"] & (t["FC"] - 1) == 0) if relu else t["FC"] == 0
    if relu:
        assert b["S3"] == min(8, max(1, 256 // ((b["FC"] // 4) * (H2P // 4)))) and b["BM"] % b["S3"] == 0


def test_foundation_shapes_take_the_widest_tiles_and_two_blocks_per_sm():
    """What the kernels were designed around (see the header comments): S1's forward tile is
    one whole graph (16 x 16 pairs) with 8x8 register blocks; every float32 foundation shape
    fits two blocks per H100 SM in both directions."""
    for relu in (False, True):
        c = cfg(*S["S1"], relu=relu)
        assert (c["fwd"]["TM"], c["fwd"]["TN"], c["fwd"]["BM"], c["fwd"]["RN"]) == (8, 8, 256, 16)
        assert (c["bwd"]["TM"], c["bwd"]["BM"], c["bwd"]["G"]) == (4, 64, 1)
        for shape in S.values():
            c = cfg(*shape, relu=relu)
            assert 2 * (max(c["fwd"]["smem"], c["bwd"]["smem"]) + 1024) <= H100["smem_sm"], (shape, relu)
            if relu:  # Fo <= 16: W3 staged once per block in both directions
                assert c["fwd"]["FC"] == c["bwd"]["FC"] == c["FoP"], shape


def test_small_graphs_share_forward_tiles():
    c = cfg(4096, 8, 16, 2, 128, 64, 16)          # 8 users: a tile holds 4 graphs
    assert c["fwd"]["BM"] == 256 and c["fwd"]["RN"] == 32 and c["fwd"]["blocks"] == 4096 * 8 // 32


def test_partial_buffers_stay_small():
    """Weight-gradient partials are one slice per persistent block, not per batch element."""
    for shape in S.values():
        c = cfg(*shape, relu=True)
        b = c["bwd"]
        elements = (b["blocks"] * b["S"] * c["H2P"] * c["H1P"] + b["G"] * shape[0] * shape[1] * shape[4]
                    + b["blocks"] * b["S3"] * c["FoP"] * c["H2P"])
        assert elements * 4 < 64 * 2**20, shape


def test_more_sms_more_backward_blocks():
    small, big = cfg(*S["S1"], dev=dict(H100, sm_count=20)), cfg(*S["S1"])
    assert small["bwd"]["blocks"] == 40 and big["bwd"]["blocks"] == 264


@pytest.mark.parametrize("relu", [False, True], ids=ACTS)
def test_huge_batches_run_in_several_launches(relu):
    c = cfg(2**22, 1024, 4, 1, 16, 8, 4, relu=relu)   # one receiver per block: 2**32 blocks
    assert c["fwd"]["RN"] == 1 and c["fwd"]["blocks"] == 2**32 and c["fwd"]["launches"] == 3
    assert c["fwd"]["grid"] == 2**31 - 1
    blocks = cfg(10, 16, 4, 1, 16, 8, 4, relu=relu)["fwd"]["blocks"]
    assert cfg(10, 16, 4, 1, 16, 8, 4, relu=relu, max_grid=3)["fwd"]["launches"] == -(-blocks // 3)


def test_wide_outputs_run_in_fo_chunks():
    """"relu" with Fo past what one chunk of W3 in shared memory holds: chunks, no refusal."""
    c = cfg(4, 16, 8, 2, 128, 256, 1000, relu=True)
    assert c["refusal"] == "" and c["FoP"] == 1024
    assert c["fwd"]["FC"] < 1024 and c["bwd"]["FC"] < 1024


@pytest.mark.parametrize("shape,dtype,dev,words", [
    ((2, 4, 3, 1, 300, 8, 2), 0, H100, ["H1=300", "256"]),
    ((2, 4, 3, 1, 8, 257, 2), 0, H100, ["H2=257", "256"]),
    ((2, 4, 3, 2, 256, 256, 2), 0, A100, ["shared memory", "163 KiB"]),
    ((2, 4, 3, 2, 16, 200, 2), 1, H100, ["shared memory", "227 KiB"]),
    ((2, 4, 3, 2, 8, 8, 2), 5, H100, ["dtype"]),
], ids=["H1", "H2", "smem-A100", "smem-f64", "dtype"])
@pytest.mark.parametrize("relu", [False, True], ids=ACTS)
def test_refusals_say_why(shape, dtype, dev, words, relu):
    reason = cfg(*shape, dtype, dev, relu=relu)["refusal"]
    assert all(w in reason for w in words), reason
    if relu and "shared memory" in reason:
        assert 'out_act="relu"' in reason


def test_h100_serves_256_wide_float32_layers():
    for relu in (False, True):
        assert cfg(8, 16, 16, 2, 256, 256, 16, relu=relu)["refusal"] == ""


# ------------------------------------------------------------------ on a GPU
def _cuda_sample(name, shape, dtype, masked, seed=0):
    B, N = shape[:2]
    mask = None
    if masked:
        mask = torch.rand(B, N, generator=torch.Generator().manual_seed(seed)) > 0.3
        mask[0] = False                       # a graph with every node masked
    s = mpnn_sample(name, *shape, dtype, seed=seed, mask=mask)
    return [a.cuda() if a is not None else None for a in s.args]


GPU_CASES = [
    ("S1-like", (64, 16, 16, 2, 128, 64, 16), True),
    ("Fo-chunks", (3, 9, 2, 2, 64, 256, 300), True),
    ("S2-like", (16, 64, 8, 2, 16, 8, 8), True),
    ("S3-like", (2, 256, 16, 2, 64, 32, 16), False),
    ("N1", (5, 1, 3, 2, 8, 8, 2), True),
    ("E0", (7, 6, 3, 0, 24, 12, 3), True),
    ("N8-H256", (9, 8, 4, 3, 256, 128, 5), True),
    ("odd", (3, 37, 5, 3, 100, 40, 7), True),
]


def _reference(tensors, mask, act):
    """The op on the reference backend in float64, with leaves for its gradients."""
    wide = [t.detach().double().requires_grad_() for t in tensors]
    return wide, ops.mpnn_message_sum(*wide, mask, out_act=act, backend="reference")


@gpu
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,shape,masked", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_values_and_gradients_on_gpu(name, shape, masked, dtype, act):
    *tensors, mask = _cuda_sample(name, shape, dtype, masked)
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = ops.mpnn_message_sum(*leaves, mask, out_act=act, backend="cuda")
    wide, want_out = _reference(tensors, mask, act)
    assert_close(out, want_out.detach(), "cuda", dtype, f"{name} {act}: forward")
    grad = torch.randn(out.shape, generator=torch.Generator(device="cuda").manual_seed(1), device="cuda",
                       dtype=torch.float64)
    got = torch.autograd.grad(out, leaves, grad.to(dtype))
    want = torch.autograd.grad(want_out, wide, grad)
    for what, g, w in zip(("node", "edge", "w1", "b1", "w2", "b2", "w3", "b3"), got, want):
        assert_close(g, w, "cuda", dtype, f"{name} {act}: gradient of {what}")


@gpu
@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_on_gpu(act):
    *tensors, mask = _cuda_sample("gc", (2, 5, 2, 2, 6, 5, 3), torch.float64, True)
    mask[1] = True
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    assert torch.autograd.gradcheck(lambda *a: ops.mpnn_message_sum(*a, mask, out_act=act, backend="cuda"), leaves)


@gpu
@pytest.mark.parametrize("act", ACTS)
def test_backward_is_bitwise_deterministic(act):
    *tensors, mask = _cuda_sample("det", (64, 16, 16, 2, 128, 64, 16), torch.float32, True)
    grad = torch.randn(64, 16, 16, device="cuda")
    runs = []
    for _ in range(2):
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        out = ops.mpnn_message_sum(*leaves, mask, out_act=act, backend="cuda")
        runs.append([out, *torch.autograd.grad(out, leaves, grad)])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@gpu
@pytest.mark.parametrize("act", ACTS)
def test_runs_on_the_callers_stream(act):
    *tensors, mask = _cuda_sample("stream", (32, 16, 8, 2, 32, 16, 8), torch.float32, True)
    want = ops.mpnn_message_sum(*tensors, mask, out_act=act, backend="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = ops.mpnn_message_sum(*tensors, mask, out_act=act, backend="cuda")
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@gpu
def test_automatic_choice_on_gpu_is_cuda():
    *tensors, _ = _cuda_sample("auto", (2, 4, 3, 2, 8, 8, 2), torch.float32, False)
    assert registry.resolve("mpnn_message_sum", "", tuple(tensors)).name == "cuda"
    too_wide = _cuda_sample("wide", (2, 4, 3, 2, 300, 8, 2), torch.float32, False)[:-1]
    assert "H1=300" in registry.explain("mpnn_message_sum", tuple(too_wide))["cuda"]
