"""cuda backend of ep_lmmse (csrc/ep_lmmse/cuda/ep_lmmse.cu).

Without a GPU: the launch configuration, and the kernels themselves run in the host
block emulator (csrc/common/cuda/block_emulator.h) on CPU tensors, in both thread orders, on
the warp path (K <= 32), the block path and forced paths, with batch chunking and non-PD
matrices, against the reference. With a GPU (skipped here): the op on the device against
the reference at K = 1, 16, 64, 128, non-PD, chunking, refusal of a K too large.
"""
import pytest
import torch

import mimo_fast.ops as ops
from mimo_fast import _ext
from mimo_fast.ops import registry
from mimo_fast.ops.reference import ep_lmmse as ref
from op_checks import assert_close
from op_samples import ep_sample

C = _ext.C_CUDA
pytestmark = pytest.mark.skipif(C is None, reason=f"mimo_fast._C_cuda not built: {_ext.C_CUDA_REASON}")
if C is not None:
    from mimo_fast.ops.cuda import ep_lmmse as glue

GPU = C is not None and registry.get_backend("cuda").unavailable() is None and torch.cuda.is_available()
gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU and the cuda backend")

H100 = 227 * 1024
F32, F64 = 0, 1


def tri(K):
    return K * (K + 1) // 2


def cfg(B, K, dtype=F32, optin=H100, **kw):
    return C.ep_lmmse_launch_config(B, K, dtype, optin, **kw)


# ------------------------------------------------------------------ launch configuration
@pytest.mark.parametrize("K", [1, 7, 16, 32])
@pytest.mark.parametrize("dtype,isz", [(F32, 4), (F64, 8)])
@pytest.mark.parametrize("backward", [False, True])
def test_warp_path_for_small_K(K, dtype, isz, backward):
    c = cfg(100, K, dtype, backward=backward)
    assert c["path"] == "warp" and c["matrices_per_block"] == 8 and c["threads"] == 256
    assert c["smem_per_matrix"] == (tri(K) + (4 if backward else 2) * K) * isz
    assert c["smem_bytes"] == 8 * c["smem_per_matrix"] <= 48 * 1024
    assert not c["smem_optin_needed"] and c["fits"] and c["blocks"] == 13 and c["launches"] == 1


def test_warp_path_small_batch_uses_fewer_warps():
    c = cfg(3, 16)
    assert c["matrices_per_block"] == 3 and c["threads"] == 96 and c["blocks"] == 1


@pytest.mark.parametrize("K,threads", [(33, 64), (64, 64), (65, 96), (100, 128), (250, 256), (300, 256)])
def test_block_path_threads(K, threads):
    c = cfg(10, K)
    assert c["path"] == "block" and c["threads"] == threads and c["matrices_per_block"] == 1
    assert c["blocks"] == 10 and c["chunk"] == 2**31 - 1


def test_block_path_opts_into_large_shared_memory():
    fwd, bwd = cfg(2, 128, F64), cfg(2, 128, F64, backward=True)
    assert fwd["smem_bytes"] == (tri(128) + 2 * 128) * 8 and fwd["smem_optin_needed"]
    assert bwd["smem_bytes"] == (tri(128) + 4 * 128) * 8 and bwd["fits"]
    assert not cfg(2, 40, F32)["smem_optin_needed"]


def kmax(optin, isz):
    k = 0
    while (tri(k + 1) + 4 * (k + 1)) * isz <= optin:
        k += 1
    return k


@pytest.mark.parametrize("optin", [H100, 163 * 1024])
def test_refuses_K_beyond_shared_memory_with_the_limit(optin):
    assert kmax(H100, 8) == 236 and kmax(H100, 4) == 336
    for K, dtype, isz in [(256, F64, 8), (400, F32, 4)]:
        c = cfg(4, K, dtype, optin)
        assert not c["fits"]
        assert f"K={K}" in c["reason"] and "KiB" in c["reason"] and f"K <= {kmax(optin, isz)}" in c["reason"]
        # the forward alone would fit for some K: it is refused by the backward's need
    assert cfg(4, 256, F32)["fits"] and cfg(4, kmax(H100, 8), F64)["fits"]
    assert not cfg(4, kmax(H100, 8) + 1, F64)["fits"]


def test_batch_chunking():
    c = cfg(20, 8, max_blocks=2)
    assert (c["chunk"], c["launches"], c["blocks"]) == (16, 2, 2)
    c = cfg(5, 40, max_blocks=2)
    assert (c["chunk"], c["launches"], c["blocks"]) == (2, 3, 2)
    c = cfg(2**40, 4)
    assert c["chunk"] == 8 * (2**31 - 1) and c["launches"] == -(-2**40 // c["chunk"])


@pytest.mark.parametrize("kw,match", [
    (dict(K=0), "K >= 1"), (dict(dtype=2), "dtype"), (dict(K=33, path=1), "warp path"),
    (dict(path=3), "path"), (dict(threads=48), "threads"), (dict(optin=0), "smem_optin"),
])
def test_bad_arguments(kw, match):
    args = dict(B=2, K=4, dtype=F32, optin=H100)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        C.ep_lmmse_launch_config(args["B"], args["K"], args["dtype"], args["optin"],
                                 path=args.get("path", 0), threads=args.get("threads", 0))


# ------------------------------------------------------------------ emulated kernels
def grads_for(sample, seed, zero_var=False):
    g = torch.Generator().manual_seed(seed)
    rhs = sample.args[1]
    gm = torch.randn(rhs.shape, generator=g, dtype=torch.float64).to(rhs.dtype)
    gv = torch.zeros_like(rhs) if zero_var else torch.randn(rhs.shape, generator=g, dtype=torch.float64).to(rhs.dtype)
    return gm, gv


def check(sample, zero_var=False, **opts):
    """Forward and backward of the cuda kernels (emulated when opts has emulate) vs the reference."""
    args, dtype = sample.args, sample.args[0].dtype
    mean, var, info = glue.forward(*args, **opts)
    want = ref.forward(*[a.double() for a in args])
    assert torch.equal(info, want[2])
    assert_close(mean, want[0], "cuda", dtype, "mean")
    assert_close(var, want[1], "cuda", dtype, "var")
    gm, gv = grads_for(sample, 7, zero_var)
    got = glue.backward(gm, gv, *args, **opts)
    wantg = ref.backward(gm.double(), gv.double(), *[a.double() for a in args])
    for name, g, w in zip(("g_gram", "g_rhs", "g_lam", "g_gam"), got, wantg):
        assert_close(g, w, "cuda", dtype, name)


EMULATED = [  # (B, K, path, threads): warp path, partial blocks, forced block path, block path
    (3, 1, 0, 0), (11, 5, 0, 0), (3, 16, 0, 0), (2, 32, 0, 0),
    (2, 1, 2, 32), (2, 5, 2, 64), (2, 17, 2, 32), (2, 33, 0, 64), (1, 48, 0, 0),
]


@pytest.mark.parametrize("B,K,path,threads", EMULATED)
@pytest.mark.parametrize("order", [0, 1])
def test_emulated_kernels_match_reference(B, K, path, threads, order):
    check(ep_sample("emu", B, K, torch.float64, seed=K), path=path, threads=threads, emulate=order)


@pytest.mark.parametrize("K,path", [(12, 0), (12, 2), (40, 0)])
def test_emulated_float32_and_mean_only_gradient(K, path):
    s = ep_sample("f32", 3, K, torch.float32, seed=K)
    check(s, path=path, threads=64 if path == 2 else 0, emulate=0)
    check(s, zero_var=True, path=path, threads=64 if path == 2 else 0, emulate=1)


def non_pd_sample(B, K, bad, dtype=torch.float64):
    """Matrix `bad` has the leading 2x2 block [[1, 2], [2, 1]] (after lam): pivot 2 fails."""
    s = ep_sample("nonpd", B, K, dtype, seed=3)
    gram, rhs, lam, gam = (a.clone() for a in s.args)
    gram[bad] = torch.eye(K, dtype=dtype)
    gram[bad, 0, 1] = gram[bad, 1, 0] = 2.0
    lam[bad] = 1e-30
    return gram, rhs, lam, gam


@pytest.mark.parametrize("K,path", [(6, 0), (6, 2), (40, 0)])
def test_emulated_not_positive_definite(K, path):
    args = non_pd_sample(3, K, bad=1)
    opts = dict(path=path, threads=64 if path == 2 else 0, emulate=1)
    mean, var, info = glue.forward(*args, **opts)
    assert info.tolist() == [0, 2, 0]
    assert torch.linalg.cholesky_ex(0.5 * (args[0] + args[0].mT) + torch.diag_embed(args[2])).info.tolist() == [0, 2, 0]
    assert mean[1].isnan().all() and var[1].isnan().all()
    want = ref.forward(*args)
    assert_close(mean[[0, 2]], want[0][[0, 2]], "cuda", torch.float64, "mean")
    grads = glue.backward(*grads_for(ep_sample("g", 3, K, torch.float64), 1), *args, **opts)
    for g in grads:
        assert g[1].isnan().all() and g[[0, 2]].isfinite().all()


@pytest.mark.parametrize("B,K,max_blocks,threads", [(11, 3, 1, 0), (5, 40, 2, 64)])
def test_emulated_batch_chunks(B, K, max_blocks, threads):
    assert cfg(B, K, max_blocks=max_blocks)["launches"] > 1
    check(ep_sample("chunks", B, K, torch.float64, seed=B), threads=threads, max_blocks=max_blocks, emulate=0)


def test_emulated_non_contiguous_and_empty():
    check(ep_sample("nc", 3, 5, torch.float64, noncontig=True), emulate=0)
    mean, var, info = glue.forward(*ep_sample("empty", 0, 4, torch.float64).args, emulate=0)
    assert mean.shape == (0, 4) and info.shape == (0,)


# ------------------------------------------------------------------ on a GPU
def on_gpu(sample):
    return tuple(a.cuda() for a in sample.args)


@gpu
@pytest.mark.parametrize("K", [1, 16, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpu_matches_reference(K, dtype):
    args = [a.requires_grad_() for a in on_gpu(ep_sample("gpu", 37, K, dtype, seed=K))]
    mean, var = ops.ep_lmmse(*args, backend="cuda")
    dargs = [a.detach().double().requires_grad_() for a in args]
    want = ref.forward(*dargs)
    assert_close(mean, want[0], "cuda", dtype, "mean")
    assert_close(var, want[1], "cuda", dtype, "var")
    gm, gv = torch.randn_like(mean), torch.randn_like(var)
    got = torch.autograd.grad((mean * gm).sum() + (var * gv).sum(), args)
    wantg = ref.backward(gm.double(), gv.double(), *[a.detach() for a in dargs])
    for name, g, w in zip(("g_gram", "g_rhs", "g_lam", "g_gam"), got, wantg):
        assert_close(g, w, "cuda", dtype, name)


@gpu
@pytest.mark.parametrize("K,path", [(8, 0), (8, 2), (64, 0)])
def test_gpu_not_positive_definite(K, path):
    args = tuple(a.cuda() for a in non_pd_sample(5, K, bad=3))
    mean, var, info = glue.forward(*args, path=path)
    assert info.tolist() == [0, 0, 0, 2, 0]
    assert mean[3].isnan().all() and var[3].isnan().all() and mean[[0, 1, 2, 4]].isfinite().all()
    with pytest.raises(ops.NotPositiveDefiniteError, match="batch index 3"):
        ops.ep_lmmse(*args, backend="cuda")


@gpu
@pytest.mark.parametrize("K,path", [(4, 0), (16, 2), (40, 0)])
def test_gpu_chunks_paths_and_determinism(K, path):
    s = ep_sample("chunk", 1000, K, torch.float64, seed=K)
    args = on_gpu(s)
    full = glue.forward(*args)
    chunked = glue.forward(*args, path=path, max_blocks=3)
    assert cfg(1000, K, max_blocks=3, path=path)["launches"] > 1
    for a, b in zip(full, chunked):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    again = glue.forward(*args)
    assert all(torch.equal(a, b) for a, b in zip(full, again))


@gpu
def test_gpu_refuses_large_K_and_falls_back():
    s = ep_sample("big", 2, 256, torch.float64)
    args = on_gpu(s)
    reason = registry.explain("ep_lmmse", args[:2])["cuda"]
    assert reason and "K=256" in reason
    with pytest.raises(registry.BackendUnavailableError, match="K=256"):
        ops.ep_lmmse(*args, backend="cuda")
    with pytest.warns(ops.BackendFallbackWarning, match="K=256"):
        mean, var = ops.ep_lmmse(*args)
    want = ref.forward(*args)
    assert_close(mean, want[0], "cuda", torch.float64, "mean")
