"""The cuda kernels of ep_lmmse on a GPU, case by case, against the float64 reference
(marked ``gpu``; tests/gpu/gpu_support.py says how they run and skip).

Each case calls the backend's glue directly (forward and backward) at one (B, K, dtype) and
launch choice: the warp path (K <= 32) and the block path at K up to the largest served (336
float32, 236 float64 on an H100's 227 KiB), the block path forced at small K, batch chunking
(``max_blocks``), a zero variance gradient, and matrices that are not positive definite
(their rows NaN, ``info`` the failing pivot, as the reference). Every case also runs twice
and must give the same bits. The launch configuration is in every failure message. The op's
own API (dispatch, autograd) at a K past the generic samples' runs through tests/op_checks.py.
"""
from __future__ import annotations

import pytest
import torch

import mimo_fast.ops as ops
from gpu_support import DEV, EMU, EMULATE, MARKS, assert_matches, needs_device, optin, same_bits, sync, to_device
from op_checks import check_grads, check_values
from op_samples import ep_oracle, ep_sample

pytestmark = MARKS

F32, F64 = torch.float32, torch.float64


def case(B, K, dtype, *, path=0, max_blocks=0, zero_var=False, seed=0, non_pd=()):
    name = (f"{str(dtype)[6:]}-B{B}-K{K}" + ("-block" if path == 2 else "") + (f"-maxblocks{max_blocks}" if max_blocks else "")
            + ("-gvar0" if zero_var else "") + (f"-nonpd{'.'.join(map(str, non_pd))}" if non_pd else ""))
    return pytest.param(dict(B=B, K=K, dtype=dtype, path=path, max_blocks=max_blocks, zero_var=zero_var, seed=seed,
                             non_pd=non_pd), id=name)


def cases():
    if EMULATE:   # tiny: every path of the kernels, on the host emulator
        return [c for dtype in (F32, F64) for c in (
            [case(9, K, dtype, seed=K) for K in (1, 16, 33)]
            + [case(5, 8, dtype, non_pd=(0, 3)), case(20, 4, dtype, max_blocks=1, zero_var=True)])]
    out = []
    for dtype in (F32, F64):
        out += [case(37, K, dtype, seed=K) for K in (1, 2, 3, 8, 16, 17, 31, 32, 33, 48, 64, 65, 96, 128, 129, 160, 200)]
        out.append(case(3, 236 if dtype == F64 else 336, dtype, seed=1))         # the largest K served
        out += [case(11, K, dtype, path=2, seed=K) for K in (1, 5, 16, 32)]     # block path at small K
        out += [case(1, 16, dtype), case(20, 16, dtype, zero_var=True), case(20, 64, dtype, zero_var=True),
                case(12, 8, dtype, non_pd=(0, 5, 11)), case(12, 64, dtype, non_pd=(3,)),
                case(1000, 4, dtype, max_blocks=3), case(100, 40, dtype, max_blocks=7)]
    out.append(case(100000, 16, F32, seed=3))
    return out


def inputs(c):
    args = to_device(ep_sample("gpu", c["B"], c["K"], c["dtype"], seed=c["seed"]).args)
    args = [a.clone() for a in args]
    for b in c["non_pd"]:   # leading 2x2 block [[1, 2], [2, 1]] (lam ~ 0): the second pivot fails
        args[0][b] = torch.eye(c["K"], dtype=c["dtype"], device=DEV)
        args[0][b, 0, 1] = args[0][b, 1, 0] = 2.0
        args[2][b] = 1e-30
    return args


@pytest.mark.parametrize("c", cases())
def test_kernels_match_reference(c):
    from mimo_fast.ops.cuda import ep_lmmse as glue
    from mimo_fast.ops.reference import ep_lmmse as ref
    B, K, dtype = c["B"], c["K"], c["dtype"]
    opts = dict(path=c["path"], max_blocks=c["max_blocks"])
    cfg = glue.launch_config(B, K, dtype, optin(), True, **opts)
    where = f"ep {str(dtype)[6:]} B={B} K={K} path {cfg['path']} threads {cfg['threads']} launches {cfg['launches']}"
    args = inputs(c)
    mean, var, info = glue.forward(*args, **opts, emulate=EMU)
    sync()
    d = [a.double() for a in args]
    want = ref.forward(*d)
    assert torch.equal(info.cpu(), want[2].cpu()), f"{where}: info {info.tolist()[:8]} != {want[2].tolist()[:8]}"
    assert info.cpu().nonzero().flatten().tolist() == list(c["non_pd"]), where
    assert_matches(mean, want[0], dtype, f"{where}: mean")
    assert_matches(var, want[1], dtype, f"{where}: var")
    g = torch.Generator().manual_seed(c["seed"] + 1)
    gm = torch.randn(B, K, generator=g, dtype=torch.float64).to(dtype=dtype, device=DEV)
    gv = torch.zeros_like(gm) if c["zero_var"] else torch.randn(B, K, generator=g, dtype=torch.float64).to(dtype=dtype, device=DEV)
    got = glue.backward(gm, gv, *args, **opts, emulate=EMU)
    wantg = ref.backward(gm.double(), gv.double(), *d)
    for name, a, b in zip(("g_gram", "g_rhs", "g_lam", "g_gam"), got, wantg):
        assert_matches(a, b, dtype, f"{where}: {name}")
    again = glue.forward(*args, **opts, emulate=EMU)
    assert same_bits((mean, var, info), again), f"{where}: two runs gave different bits"


@needs_device
def test_op_autograd_past_the_generic_samples():
    """The op as users call it (dispatch, autograd) at K = 24, float64: tests/op_checks.py."""
    s = ep_sample("K24", 9, 24, F64, seed=5)
    s.args = tuple(to_device(s.args))
    check_values(ops.ep_lmmse, ep_oracle, s, "cuda")
    check_grads(ops.ep_lmmse, ep_oracle, s, "cuda")
