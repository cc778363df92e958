"""Compile every Triton kernel of mimo_fast for a GPU architecture *without a GPU* and
report what each needs: registers per thread, stack (spilled registers, 0 is good) and
shared memory, at the benchmark shapes and with the block sizes the glue would choose.

    python tools/triton_resources.py [--arch 90] [--dtype fp32 fp64] > tools/results/triton_resources_sm90.txt

Uses Triton's own compiler and the cuobjdump shipped in the triton wheel. It is how the
block sizes in mimo_fast/ops/triton/*.py were checked on a machine with no GPU; a kernel
whose shared memory exceeds the device's limit (227 KiB on sm_90, 163 KiB on sm_80) would
fail to launch there. A tool (no timing, no GPU), hence tools/ and not bench/.
"""
from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mimo_fast.bench import shapes
from mimo_fast.kernels import amp_step as amp_k
from mimo_fast.kernels import ep_lmmse as ep_k
from mimo_fast.kernels import mpnn_message_sum as mpnn_k
from mimo_fast.ops.triton import amp_step as amp_glue
from mimo_fast.ops.triton import ep_lmmse as ep_glue
from mimo_fast.ops.triton import mpnn_message_sum as mpnn_glue

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
# N, H1, H2, E, Fo, out_act == "relu" of the standard shapes (mimo_fast.bench.shapes, as in
# bench/bench_gpu.py; "none" never reads W3 in the kernels)
MPNN = {key: (N, H1, H2, E, Fo, relu) for key, (B, N, F, E, H1, H2, Fo), relu in
        [(k, shapes.MPNN[k.removesuffix("-relu")], k.endswith("-relu")) for k in ("S1", "S1-relu", "S2", "S3")]}
EP = {"K16": 16, "K64": 64}
AMP = {"64x64": (64, 64), "1024x1024": (1024, 1024)}


def signature(fn, dtype: str, constexprs: dict) -> dict:
    """Pointers as *dtype (mask as *i8, info as *i32), scalars as i32, constexprs as such."""
    sig = {}
    for p in inspect.signature(fn.fn).parameters:
        if p in constexprs:
            sig[p] = "constexpr"
        elif p == "mask":
            sig[p] = "*i8"
        elif p == "info_out":
            sig[p] = "*i32"
        elif p.startswith("s_") or p in ("M", "N", "K", "H1", "H2", "E", "Fo", "TILES", "NT"):
            sig[p] = "i32"
        else:
            sig[p] = f"*{dtype}"
    return sig


def resources(fn, dtype: str, constexprs: dict, arch: int, num_warps: int, num_stages: int = 3) -> dict:
    src = ASTSource(fn=fn, signature=signature(fn, dtype, constexprs), constexprs=constexprs)
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                        options={"num_warps": num_warps, "num_stages": num_stages})
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
        f.write(ck.asm["cubin"])
    try:
        out = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    get = lambda key: int(m.group(1)) if (m := re.search(key + r":(\d+)", out)) else None  # noqa: E731
    return dict(regs=get("REG"), stack=get("STACK"), smem=ck.metadata.shared, warps=num_warps)


def rows(arch: int, dtypes) -> list:
    out = []
    for dt in dtypes:
        isz = 4 if dt == "fp32" else 8
        for name, (N, H1, H2, E, Fo, relu) in MPNN.items():
            for bwd, fn in ((False, mpnn_k.mpnn_fwd_kernel), (True, mpnn_k.mpnn_bwd_kernel)):
                bl = mpnn_glue.blocks(N, H1, H2, E, isz, backward=bwd, Fo=Fo if relu else 0)
                nw, ns = bl.pop("num_warps"), bl.pop("num_stages")
                c = dict(HAS_EDGE=True, HAS_MASK=True, RELU_OUT=relu, **bl)
                out.append((f"mpnn {name} {'bwd' if bwd else 'fwd'}", dt, resources(fn, dt, c, arch, nw, ns)))
        for name, K in EP.items():
            for bwd, fn in ((False, ep_k.ep_lmmse_fwd_kernel), (True, ep_k.ep_lmmse_bwd_kernel)):
                KP, nw = ep_glue.blocks(K, isz, backward=bwd)
                out.append((f"ep {name} {'bwd' if bwd else 'fwd'}", dt, resources(fn, dt, {"KP": KP}, arch, nw)))
        for name, (M, N) in AMP.items():
            bl = amp_glue.blocks(M, N)
            row, col = dict(BM=bl["ROW_BM"], BN=bl["ROW_BN"]), dict(BM=bl["COL_BM"], BN=bl["COL_BN"])
            for label, fn, c, nw in (("rows", amp_k.amp_rows_kernel, row, 4),
                                     ("cols", amp_k.amp_cols_kernel, dict(col, BACKWARD=False), 4),
                                     ("cols(bwd)", amp_k.amp_cols_kernel, dict(col, BACKWARD=True), 4),
                                     ("rows bwd", amp_k.amp_rows_bwd_kernel, row, 4),
                                     ("cols bwd", amp_k.amp_cols_bwd_kernel, col, 8)):
                out.append((f"amp {name} {label}", dt, resources(fn, dt, c, arch, nw)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--dtype", nargs="+", default=["fp32", "fp64"])
    args = ap.parse_args()
    print(f"{'kernel':28s} {'dtype':5s} {'warps':>5s} {'regs':>5s} {'stack':>6s} {'smem':>8s}")
    for name, dt, r in rows(args.arch, args.dtype):
        print(f"{name:28s} {dt:5s} {r['warps']:5d} {r['regs']:5d} {r['stack']:6d} {r['smem']:8d}", flush=True)


if __name__ == "__main__":
    main()
