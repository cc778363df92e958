#!/usr/bin/env python
"""GPU check of the cuda ep_lmmse and amp_step kernels against the reference.

Run on a machine with a CUDA GPU after `pip install --no-build-isolation .`:

    python gpu_check_ep_amp.py            # every case, then a short timing table
    python gpu_check_ep_amp.py --quick    # fewer shapes, no timing
    python gpu_check_ep_amp.py --emulate  # dry run of this script on the CPU (host emulator, tiny cases)

One line per case: the launch configuration used and its worst output, i.e. the error
relative to the backend tolerance (`ratio`, <= 1 passes: |got - want| <= atol * max(1,
max|want|) + rtol * |want|, the tests' rule), the max abs error and where the worst element
is. A failing output gets its own line with the values there, so an index bug shows as
its batch element / row / column (--verbose: a line for every output). Each case is run
twice and must give the same bits. Failures are listed at the end and the exit status is 1. A CUDA error (e.g. an illegal address) stops the run at once
(the context is unusable after it); rerun with CUDA_LAUNCH_BLOCKING=1 to pin the kernel.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

# Import the installed package (with its compiled extensions), not the source tree this
# script sits in: drop the script's folder (and the current one, if it is the same) from the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]

import torch  # noqa: E402

import mimo_fast  # noqa: E402
import mimo_fast.ops as ops  # noqa: E402
from mimo_fast import _ext  # noqa: E402
from mimo_fast.ops import registry  # noqa: E402
from mimo_fast.ops.reference import amp_step as amp_ref  # noqa: E402
from mimo_fast.ops.reference import ep_lmmse as ep_ref  # noqa: E402

FAILURES: list[str] = []
DEV = torch.device("cuda")
EMULATE = -1  # --emulate: 0, and DEV = cpu (the kernels run in the host block emulator)
VERBOSE = False  # --verbose: a line for every output, not only each case's worst
CASE: list = []  # (output, ratio, max_abs, where) of the current case


def optin() -> int:
    """Shared memory per block with the opt-in (what the glue passes the kernels)."""
    if EMULATE >= 0:
        return 227 * 1024
    return torch.cuda.get_device_properties(DEV).shared_memory_per_block_optin


def sync():
    if EMULATE < 0:
        torch.cuda.synchronize()


def sticky(exc: BaseException) -> bool:
    """A CUDA error after which the context is unusable (illegal address, launch failure)."""
    text = str(exc)
    return isinstance(exc, getattr(torch, "AcceleratorError", ())) or "illegal" in text or "CUDA error" in text


def tol(dtype):
    return registry.get_backend("cuda").tolerance(dtype)


def compare(case: str, name: str, got: torch.Tensor, want: torch.Tensor, dtype) -> None:
    """Check one output (values, NaN pattern, shape). A failure is printed at once, in full;
    a pass is kept for the case's one-line summary (every output with --verbose)."""
    rtol, atol = tol(dtype)
    label = f"{case:58s} {name:11s}"

    def fail(msg):
        FAILURES.append(f"{case} {name}: {msg}")
        print(f"{label} FAIL {msg}")

    if got.shape != want.shape:
        return fail(f"shape {tuple(got.shape)} != {tuple(want.shape)}")
    g = torch.view_as_real(got.detach()).double() if got.is_complex() else got.detach().double()
    w = torch.view_as_real(want.detach()).double() if want.is_complex() else want.detach().double()
    nan_g, nan_w = g.isnan(), w.isnan()
    if not torch.equal(nan_g, nan_w):
        bad = (nan_g != nan_w).nonzero()[0].tolist()
        return fail(f"NaN pattern differs: {int((nan_g != nan_w).sum())} elements, first at {bad}")
    ok = ~nan_w
    if not ok.any():
        CASE.append((name, 0.0, 0.0, "all NaN, as the reference"))
        return
    diff = torch.where(ok, (g - w).abs(), torch.zeros_like(g))
    scale = max(1.0, float(w[ok].abs().max()))
    ratio = diff / (atol * scale + rtol * torch.where(ok, w.abs(), torch.zeros_like(w)))
    worst = int(ratio.argmax())
    where = [int(i) for i in torch.unravel_index(torch.tensor(worst), ratio.shape)]
    r, mx = float(ratio.flatten()[worst]), float(diff.max())
    if not (r <= 1 and diff.isfinite().all()):
        return fail(f"max_abs={mx:.2e} ratio={r:.3g} worst_at={where} (got {float(g.flatten()[worst]):.6g}, "
                    f"want {float(w.flatten()[worst]):.6g})")
    CASE.append((name, r, mx, f"worst_at={where}"))
    if VERBOSE:
        print(f"{label} ok   max_abs={mx:.2e} ratio={r:.3f} worst_at={where}")


def same_bits(xs, ys) -> bool:
    """Bitwise equal (NaN included): the kernels are deterministic."""
    return all(x.shape == y.shape and torch.equal(x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8))
               for x, y in zip(xs, ys))


def run_case(fn, case: str) -> None:
    """Run one case; print a line with its worst output (failures were printed in full)."""
    CASE.clear()
    failed = len(FAILURES)
    try:
        fn()
        sync()
        if len(FAILURES) == failed and CASE:
            name, r, mx, where = max(CASE, key=lambda c: c[1])
            print(f"{case:58s} ok   worst {name} ratio={r:.3f} abs={mx:.1e} {where.replace('worst_at=', 'at ')}")
    except Exception as exc:  # noqa: BLE001  (report and go on, unless the context is lost)
        traceback.print_exc()
        FAILURES.append(f"{case}: {type(exc).__name__}: {exc}")
        print(f"{case:58s} FAIL {type(exc).__name__}: {exc}")
        if sticky(exc):
            print("CUDA error: the run stops here (rerun with CUDA_LAUNCH_BLOCKING=1 to pin the launch)")
            finish()


def gen(seed):
    return torch.Generator(device=DEV).manual_seed(seed)


def randn(shape, g, dtype):
    return torch.randn(shape, generator=g, device=DEV, dtype=torch.float64).to(dtype)


# ------------------------------------------------------------------ ep_lmmse
def ep_inputs(B, K, dtype, seed):
    g = gen(seed)
    M = K + 2
    H = randn((B, M, K), g, torch.float64) / M ** 0.5
    gram = H.mT @ H
    lam = torch.rand(B, K, generator=g, device=DEV, dtype=torch.float64) + 0.2
    return [t.to(dtype) for t in (gram, randn((B, K), g, torch.float64), lam, randn((B, K), g, torch.float64))]


def ep_case(B, K, dtype, *, path=0, max_blocks=0, zero_var=False, seed=0, non_pd=()):
    from mimo_fast.ops.cuda import ep_lmmse as glue
    opts = dict(path=path, max_blocks=max_blocks)
    cfg = glue.launch_config(B, K, dtype, optin(), True, **opts)
    opts["emulate"] = EMULATE
    case = (f"ep {str(dtype)[6:]:7s} B={B:<6d} K={K:<4d} {cfg['path']:5s} thr={cfg['threads']:<3d} "
            f"launches={cfg['launches']}" + (" gvar=0" if zero_var else "") + (f" nonPD{list(non_pd)}" if non_pd else ""))

    def body():
        args = ep_inputs(B, K, dtype, seed)
        for b in non_pd:  # leading 2x2 block [[1, 2], [2, 1]]: the second pivot fails
            args[0][b] = torch.eye(K, dtype=dtype, device=DEV)
            args[0][b, 0, 1] = args[0][b, 1, 0] = 2.0
            args[2][b] = 1e-30
        mean, var, info = glue.forward(*args, **opts)
        d = [a.double() for a in args]
        want = ep_ref.forward(*d)
        if not torch.equal(info.cpu(), want[2].cpu()):
            FAILURES.append(f"{case} info: {info.tolist()[:8]} != {want[2].tolist()[:8]}")
            print(f"{case:58s} info        FAIL {info.tolist()[:8]} != {want[2].tolist()[:8]}")
        compare(case, "mean", mean, want[0], dtype)
        compare(case, "var", var, want[1], dtype)
        g = gen(seed + 1)
        gm = randn((B, K), g, dtype)
        gv = torch.zeros_like(gm) if zero_var else randn((B, K), g, dtype)
        got = glue.backward(gm, gv, *args, **opts)
        wantg = ep_ref.backward(gm.double(), gv.double(), *d)
        for name, a, b in zip(("g_gram", "g_rhs", "g_lam", "g_gam"), got, wantg):
            compare(case, name, a, b, dtype)
        again = glue.forward(*args, **opts)
        if not same_bits((mean, var, info), again):
            FAILURES.append(f"{case}: two runs differ")
            print(f"{case:58s} determinism FAIL")
    run_case(body, case)


def ep_op_case():
    """Through the op: registration, autograd, refusal and fallback of a K too large."""
    case = "ep op API: autograd (backend='cuda') vs reference, K=24"

    def body():
        args = [a.requires_grad_() for a in ep_inputs(9, 24, torch.float64, 5)]
        out = ops.ep_lmmse(*args, backend="cuda")
        ref = ops.ep_lmmse(*args, backend="reference")
        for name, a, b in zip(("mean", "var"), out, ref):
            compare(case, name, a, b, torch.float64)
        w = [torch.randn_like(o) for o in out]
        ga = torch.autograd.grad(sum((o * p).sum() for o, p in zip(out, w)), args)
        gb = torch.autograd.grad(sum((o * p).sum() for o, p in zip(ref, w)), args)
        for name, a, b in zip(("g_gram", "g_rhs", "g_lam", "g_gam"), ga, gb):
            compare(case, name, a, b, torch.float64)
        big = ep_inputs(2, 240, torch.float64, 6)
        reason = registry.explain("ep_lmmse", tuple(big[:2]))["cuda"]
        print(f"{'ep refusal K=240 float64':58s} reason: {reason}")
        if not reason:
            FAILURES.append("ep K=240 float64 was not refused")
    run_case(body, case)


def ep_cases(quick):
    if EMULATE >= 0:
        for dtype in (torch.float32, torch.float64):
            for K in (1, 16, 33):
                ep_case(9, K, dtype, seed=K)
            ep_case(5, 8, dtype, non_pd=(0, 3))
            ep_case(20, 4, dtype, max_blocks=1, zero_var=True)
        return
    for dtype in (torch.float32, torch.float64):
        ks = [1, 5, 16, 32, 33, 64, 128] if quick else [1, 2, 3, 8, 16, 17, 31, 32, 33, 48, 64, 65, 96, 128, 129, 160, 200]
        for K in ks:
            ep_case(37, K, dtype, seed=K)
        if not quick:
            ep_case(3, 236 if dtype == torch.float64 else 336, dtype, seed=1)   # largest K served
            for K in (1, 5, 16, 32):
                ep_case(11, K, dtype, path=2, seed=K)                            # block path, small K
        ep_case(1, 16, dtype)
        ep_case(20, 16, dtype, zero_var=True)
        ep_case(20, 64, dtype, zero_var=True)
        ep_case(12, 8, dtype, non_pd=(0, 5, 11))
        ep_case(12, 64, dtype, non_pd=(3,))
        ep_case(1000, 4, dtype, max_blocks=3)
        ep_case(100, 40, dtype, max_blocks=7)
    ep_case(100000, 16, torch.float32, seed=3)
    ep_op_case()


# ------------------------------------------------------------------ amp_step
def amp_inputs(B, M, N, dtype, seed, first=False):
    g = gen(seed)
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128

    def c(*shape, scale=1.0):
        return (torch.complex(randn(shape, g, torch.float64), randn(shape, g, torch.float64)) * scale).to(cdt)

    H, y, x = c(B, M, N, scale=(2 * M) ** -0.5), c(B, M), c(B, N, scale=0.7)
    v = (torch.rand(B, N, generator=g, device=DEV, dtype=torch.float64) * 0.5 + 0.05).to(dtype)
    zp = y.clone() if first else c(B, M)
    Vp = (torch.rand(B, M, generator=g, device=DEV, dtype=torch.float64) * 0.5).to(dtype)
    s2 = (torch.rand(B, generator=g, device=DEV, dtype=torch.float64) * 0.3 + 0.05).to(dtype)
    return [H, y, x, v, zp, Vp, s2]


def up64(t):
    return t.to(torch.complex128) if t.is_complex() else t.double()


def amp_case(B, M, N, dtype, *, max_blocks=0, smem_optin=None, first=False, seed=0):
    from mimo_fast.ops.cuda import amp_step as glue
    cfg = glue.launch_config(B, M, N, dtype, smem_optin or optin(), max_blocks=max_blocks)
    opts = dict(max_blocks=max_blocks, smem_optin=smem_optin, emulate=EMULATE)
    case = (f"amp {str(dtype)[6:]:7s} B={B:<4d} M={M:<5d} N={N:<5d} R={cfg['rows_per_tile']:<2d} "
            f"tiles={cfg['row_tiles']:<4d} {'smem' if cfg['tile_in_smem'] else 'gmem'} launches={cfg['launches']}"
            + (" first" if first else ""))

    def body():
        args = amp_inputs(B, M, N, dtype, seed, first)
        got = glue.forward(*args, **opts)
        d = [up64(a) for a in args]
        want = amp_ref.forward(*d)
        for name, a, b in zip(("r", "Sigma", "z", "V"), got, want):
            compare(case, name, a, b, dtype)
        g = gen(seed + 1)
        ups = [(torch.complex(randn(o.shape, g, torch.float64), randn(o.shape, g, torch.float64)).to(o.dtype)
                if o.is_complex() else randn(o.shape, g, o.dtype)) for o in got]
        gotg = glue.backward(*ups, *args, **opts)
        wantg = amp_ref.backward(*[up64(u) for u in ups], *d)
        for name, a, b in zip(("g_H", "g_y", "g_x", "g_v", "g_z_prev", "g_V_prev", "g_noise"), gotg, wantg):
            compare(case, name, a, b, dtype)
        again = glue.forward(*args, **opts)
        againg = glue.backward(*ups, *args, **opts)
        if not same_bits(list(got) + list(gotg), list(again) + list(againg)):
            FAILURES.append(f"{case}: two runs differ")
            print(f"{case:58s} determinism FAIL")
    run_case(body, case)


def amp_op_case():
    case = "amp op API: autograd (backend='cuda') vs reference, non-contiguous"

    def body():
        args = amp_inputs(4, 70, 12, torch.float64, 8)
        args = [a.transpose(0, -1).contiguous().transpose(0, -1) if a.dim() > 1 else a for a in args]
        args = [a.requires_grad_() for a in args]
        assert not args[0].is_contiguous()
        out = ops.amp_step(*args, backend="cuda")
        ref = ops.amp_step(*args, backend="reference")
        for name, a, b in zip(("r", "Sigma", "z", "V"), out, ref):
            compare(case, name, a, b, torch.float64)
        w = [torch.randn_like(o) for o in out]
        loss = lambda outs: sum(((o * p).real if o.is_complex() else o * p).sum() for o, p in zip(outs, w))  # noqa: E731
        ga, gb = torch.autograd.grad(loss(out), args), torch.autograd.grad(loss(ref), args)
        for name, a, b in zip(("g_H", "g_y", "g_x", "g_v", "g_z_prev", "g_V_prev", "g_noise"), ga, gb):
            compare(case, name, a, b, torch.float64)
    run_case(body, case)


def amp_cases(quick):
    if EMULATE >= 0:
        for dtype in (torch.float32, torch.float64):
            for M, N in ((1, 1), (7, 40), (37, 3)):
                amp_case(2, M, N, dtype, seed=M + N)
            amp_case(3, 20, 9, dtype, smem_optin=200, first=True)
            amp_case(5, 20, 9, dtype, max_blocks=4)
        return
    sizes = [1, 7, 64, 300] if quick else [1, 7, 64, 300, 1024]
    for dtype in (torch.float32, torch.float64):
        for M in sizes:
            for N in sizes:
                amp_case(3, M, N, dtype, seed=M * 131 + N)
        amp_case(5, 21, 6, dtype, first=True)
        amp_case(3, 300, 64, dtype, smem_optin=256)          # tile in global memory
        amp_case(50, 300, 7, dtype, max_blocks=40)           # 3 launches
        if not quick:
            amp_case(2, 2048, 64, dtype)
            amp_case(2, 64, 4096, dtype)
            amp_case(1, 5, 20000, dtype)                     # a row over the tile budget: gmem
    amp_op_case()


# ------------------------------------------------------------------ timing
def timed(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def bench():
    print("\ntiming (ms per call, CUDA events; reference = the pure-PyTorch backend on the GPU)")
    for B, K, dt in [(100000, 16, torch.float32), (10000, 32, torch.float32), (10000, 64, torch.float32),
                     (10000, 64, torch.float64), (1000, 128, torch.float32)]:
        args = [a.requires_grad_() for a in ep_inputs(B, K, dt, 1)]
        row = []
        for be in ("cuda", "reference"):
            f = lambda: ops.ep_lmmse(*args, backend=be)  # noqa: E731
            fb = lambda: torch.autograd.grad(sum(o.sum() for o in ops.ep_lmmse(*args, backend=be)), args)  # noqa: E731
            row.append((timed(f), timed(fb)))
        print(f"  ep_lmmse B={B:<6d} K={K:<3d} {str(dt)[6:]:7s} fwd cuda {row[0][0]:8.3f} ref {row[1][0]:8.3f} | "
              f"fwd+bwd cuda {row[0][1]:8.3f} ref {row[1][1]:8.3f}")
    for B, M, N, dt in [(10000, 16, 8, torch.float32), (1000, 64, 32, torch.float32), (64, 1024, 1024, torch.float32),
                        (64, 1024, 1024, torch.float64)]:
        args = [a.requires_grad_() for a in amp_inputs(B, M, N, dt, 2)]
        row = []
        for be in ("cuda", "reference"):
            f = lambda: ops.amp_step(*args, backend=be)  # noqa: E731
            fb = lambda: torch.autograd.grad(sum((o.real if o.is_complex() else o).sum()  # noqa: E731
                                                 for o in ops.amp_step(*args, backend=be)), args)
            row.append((timed(f), timed(fb)))
        gb = B * M * N * (8 if dt == torch.float32 else 16) / 1e6
        print(f"  amp_step B={B:<5d} M={M:<4d} N={N:<4d} {str(dt)[6:]:7s} fwd cuda {row[0][0]:8.3f} ref {row[1][0]:8.3f} | "
              f"fwd+bwd cuda {row[0][1]:8.3f} ref {row[1][1]:8.3f}  (H = {gb:.1f} MB; fwd {gb / row[0][0]:.0f} GB/s)")


def finish():
    print()
    if FAILURES:
        print(f"{len(FAILURES)} FAILURE(S):")
        for f in FAILURES:
            print("  " + f)
        sys.exit(1)
    print("all cases passed")
    sys.exit(0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer shapes and no timing")
    p.add_argument("--no-bench", action="store_true", help="skip the timing table")
    p.add_argument("--emulate", action="store_true", help="dry run on the CPU: tiny cases through the host emulator")
    p.add_argument("--verbose", action="store_true", help="a line for every output of every case")
    a = p.parse_args()
    global DEV, EMULATE, VERBOSE
    VERBOSE = a.verbose
    if _ext.C_CUDA is None:
        sys.exit(f"mimo_fast._C_cuda is missing ({_ext.C_CUDA_REASON}); mimo_fast imported from "
                 f"{os.path.dirname(mimo_fast.__file__)}: run `pip install --no-build-isolation .` first")
    if a.emulate:
        DEV, EMULATE = torch.device("cpu"), 0
        ep_cases(True)
        amp_cases(True)
        finish()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible to torch")
    reason = registry.get_backend("cuda").unavailable()
    if reason:
        sys.exit(f"the cuda backend is unavailable: {reason}")
    props = torch.cuda.get_device_properties(DEV)
    print(f"mimo_fast {mimo_fast.__version__}, torch {torch.__version__}, {props.name} (sm_{props.major}{props.minor}), "
          f"smem opt-in {props.shared_memory_per_block_optin} B, _C_cuda {dict(_ext.C_CUDA.build_info)}")
    t0 = time.time()
    ep_cases(a.quick)
    amp_cases(a.quick)
    print(f"\nchecks took {time.time() - t0:.1f} s")
    if not (a.quick or a.no_bench):
        try:
            bench()
        except Exception:  # noqa: BLE001  (timing is informative only)
            traceback.print_exc()
    finish()


if __name__ == "__main__":
    main()
