"""One-shot GPU check of the `cuda` and `triton` backends of mpnn_message_sum, both out_act
forms ("none": W3 after the sum; "relu": relu(W3 h2 + b3) per pair, before the sum). Run it
on a GPU machine after `pip install .`; it imports the installed package, not this tree.

  python gpu_check_mpnn.py [--quick] [--compile] [--sanitizer] [--no-timing] [--cases a,b]
                           [--backends cuda,triton] [--acts none,relu]

1. Environment: torch, GPU, limits, how _C_cuda was built.
2. Correctness: for each case (shapes, dtypes, masks, N = 1, E = 0, wide edges, tiles that
   span graphs, streamed senders, receiver groups, wide outputs in Fo chunks, non-contiguous
   inputs), each out_act form and each backend: the cuda launch geometry, then the max error
   of the forward and of every gradient against the float64 reference backend, relative to
   the tolerance; a failing tensor also gets where its worst error sits (batch element,
   receiver, masked or not, j == n). Plus bitwise determinism (cuda). A backend that refuses
   a case says why and is skipped. Each case prints its name before running, so a crash
   names its case.
3. API checks per backend and out_act: gradcheck (float64), torch.library.opcheck, and
   torch.compile(fullgraph=True) of a loss (values and gradients against eager).
4. Timing (float32, median of 20 after 3 warm-ups, torch.cuda.synchronize inside the timed
   call) at S1-S3, both forms: cuda vs reference, Triton (by name), eager "careful" PyTorch
   and, with --compile, torch.compile(mode="max-autotune"); forward and forward+backward;
   plus a profiler table of the cuda backend's kernels at each shape.
5. With --sanitizer (and compute-sanitizer on PATH): memcheck and racecheck of a few tiny
   cases in a subprocess (each limited to 240 s).
Exit status 1 if any check failed. Without --compile and --sanitizer it takes a few
minutes (mostly Triton's first compiles and the float64 references).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import pathlib
import shutil
import statistics
import subprocess
import sys
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE]  # the installed package

import torch  # noqa: E402

import mimo_fast.ops as ops  # noqa: E402
from mimo_fast import _ext  # noqa: E402
from mimo_fast.ops import registry  # noqa: E402
from mimo_fast.ops.validate import trusted_inputs  # noqa: E402

OP = "mpnn_message_sum"
NAMES = ("out", "node", "edge", "w1", "b1", "w2", "b2", "w3", "b3")
ACTS = ("none", "relu")
FAILURES: list[str] = []
DEVICE = "cuda"  # "cpu" with --emulate (the script's own test on a machine without a GPU)


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()

# name, (B, N, F, E, H1, H2, Fo), dtype, mask kind ("none", "random" = ~30% masked with one
# graph fully masked, "full" = every node present but given as a mask), noncontiguous
CASES = [
    ("tiny", (2, 4, 3, 2, 5, 6, 7), torch.float32, "random", False),
    ("tiny-f64", (2, 4, 3, 2, 5, 6, 7), torch.float64, "random", False),
    ("N1", (5, 1, 3, 2, 8, 8, 2), torch.float32, "random", False),
    ("E0", (7, 6, 3, 0, 24, 12, 3), torch.float32, "random", False),
    ("E0-f64", (7, 6, 3, 0, 24, 12, 3), torch.float64, "none", False),
    ("noncontig", (6, 9, 4, 3, 40, 20, 5), torch.float32, "random", True),
    ("S1-like", (64, 16, 16, 2, 128, 64, 16), torch.float32, "random", False),
    ("S1-like-nomask", (64, 16, 16, 2, 128, 64, 16), torch.float32, "none", False),
    ("S1-like-f64", (64, 16, 16, 2, 128, 64, 16), torch.float64, "random", False),
    ("S1-full", (1024, 16, 16, 2, 128, 64, 16), torch.float32, "random", False),   # persistent loop
    ("S2-like", (16, 64, 8, 2, 16, 8, 8), torch.float32, "random", False),
    ("S2-like-f64", (16, 64, 8, 2, 16, 8, 8), torch.float64, "full", False),
    ("S3-like", (4, 256, 16, 2, 64, 32, 16), torch.float32, "random", False),      # receiver groups
    ("S3-like-f64", (2, 256, 16, 2, 64, 32, 16), torch.float64, "none", False),
    ("N8-share-tiles", (33, 8, 4, 2, 32, 64, 4), torch.float32, "random", False),
    ("N8-H256", (9, 8, 4, 3, 256, 128, 5), torch.float32, "random", False),
    ("odd", (3, 37, 5, 3, 100, 40, 7), torch.float32, "random", False),
    ("odd-f64", (3, 37, 5, 3, 100, 40, 7), torch.float64, "random", False),
    ("sender-chunks", (2, 300, 3, 2, 16, 200, 3), torch.float32, "random", False),
    ("H256x256", (3, 16, 8, 2, 256, 256, 4), torch.float32, "none", False),
    ("wide-E", (2, 12, 2, 40, 8, 8, 2), torch.float32, "random", False),
    ("wide-E-f64", (2, 12, 2, 40, 8, 8, 2), torch.float64, "random", False),
    ("wide-E-H32", (2, 12, 2, 100, 8, 32, 2), torch.float32, "none", False),
    ("Fo-chunks", (3, 9, 2, 2, 64, 256, 300), torch.float32, "random", False),     # "relu": W3 in chunks
    ("Fo-wide-f64", (2, 6, 2, 2, 16, 64, 200), torch.float64, "random", False),
]
QUICK = {"tiny", "tiny-f64", "N1", "E0", "noncontig", "S1-like", "S1-like-f64", "S2-like", "S3-like", "odd",
         "Fo-chunks"}
#: triton's cases unless --cases names them (each new shape costs Triton compiles of seconds;
#: the session runs this script under a time limit)
TRITON_CASES = {"tiny", "tiny-f64", "N1", "E0", "noncontig", "S1-like", "odd"}
SANITIZER_CASES = ["tiny", "tiny-f64", "N1", "E0", "odd"]
SHAPES = {"S1": (1024, 16, 16, 2, 128, 64, 16), "S2": (256, 64, 8, 2, 16, 8, 8), "S3": (32, 256, 16, 2, 64, 32, 16)}


def make_inputs(shape, dtype, mask_kind, noncontig=False, seed=0):
    B, N, F, E, H1, H2, Fo = shape
    g = torch.Generator(device=DEVICE).manual_seed(seed)

    def r(*s, scale=1.0):
        t = torch.randn(*s, generator=g, device=DEVICE, dtype=torch.float64) * scale
        if noncontig:  # same values, every other element of a wider buffer
            big = torch.zeros(*s, 2, device=DEVICE, dtype=torch.float64)
            big[..., 0] = t
            t = big[..., 0]
        return t.to(dtype)

    tensors = [r(B, N, F), r(B, N, N, E), r(H1, 2 * F + E, scale=(2 * F + E + 1) ** -0.5), r(H1, scale=0.3),
               r(H2, H1, scale=H1 ** -0.5), r(H2, scale=0.3), r(Fo, H2, scale=H2 ** -0.5), r(Fo, scale=0.3)]
    mask = None
    if mask_kind == "random":
        mask = torch.rand(B, N, generator=g, device=DEVICE) > 0.3
        mask[0] = False
    elif mask_kind == "full":
        mask = torch.ones(B, N, dtype=torch.bool, device=DEVICE)
    return tensors, mask


def config_line(shape, dtype, act="none"):
    """The cuda backend's launch geometry for a (B, N, F, E, H1, H2, Fo) case and out_act form."""
    from mimo_fast.ops.cuda import mpnn_message_sum as glue
    index = torch.cuda.current_device() if DEVICE == "cuda" else 0
    B, N, F, E, H1, H2, Fo = shape
    c = glue.launch_config(B, N, E, H1, H2, Fo, dtype, act == "relu", index)
    if c["refusal"]:
        return c, f"REFUSED: {c['refusal']}"
    f, b = c["fwd"], c["bwd"]
    fc = lambda t: f" FC {t['FC']}/{c['FoP']}" if act == "relu" else ""  # noqa: E731
    s3 = f" S3 {b['S3']}" if act == "relu" else ""
    return c, (f"H1P {c['H1P']} H2P {c['H2P']} | fwd TM{f['TM']}xTN{f['TN']} BM {f['BM']} (RN {f['RN']} x BJ {f['BJ']})"
               f"{fc(f)} blocks {f['blocks']} smem {f['smem'] // 1024}K | bwd TM{b['TM']} BM {b['BM']} (RN {b['RN']} x "
               f"BJ {b['BJ']}){fc(b)} CW {b['CW']} S {b['S']}{s3} RG {b['RG']} G {b['G']} items {b['items']} "
               f"blocks {b['blocks']} smem {b['smem'] // 1024}K")


def refusal(backend, tensors):
    """Why `backend` cannot run these inputs (asked by name), or None."""
    return registry.get_backend(backend).refusal(OP, tuple(tensors), explicit=True)


def where(name, got, want, tensors, mask, tol_abs):
    """Where the worst error of a failing tensor sits, in the op's terms."""
    err = (got.double() - want).abs()
    idx = torch.unravel_index(err.argmax(), err.shape)
    idx = tuple(int(i) for i in idx)
    bad = (err > tol_abs).sum().item()
    msg = f"      worst at {idx}: got {got[idx].item():.6g} want {want[idx].item():.6g}; {bad}/{err.numel()} beyond tolerance"
    if name in ("out", "node", "edge") and err.dim() >= 2:
        b, n = idx[0], idx[1]
        extra = f"; batch {b} receiver {n}"
        if mask is not None:
            extra += f" (mask[b, n] = {bool(mask[b, n])}, nodes present in b: {int(mask[b].sum())})"
        if name == "edge":
            j = idx[2]
            extra += f", sender {j}, j == n: {j == n}"
            if mask is not None:
                extra += f", mask[b, j] = {bool(mask[b, j])}"
        per_b = err.flatten(2).amax(-1) if err.dim() > 2 else err
        rows = (per_b > tol_abs).nonzero()
        extra += f"; bad (b, n) rows: {rows[:8].tolist()}{' ...' if len(rows) > 8 else ''}"
        msg += extra
    return msg


def reference(tensors, mask, act, grad_out):
    """Forward and the eight gradients on the reference backend in float64."""
    wide = [t.detach().double().requires_grad_() for t in tensors]
    out = ops.mpnn_message_sum(*wide, mask, out_act=act, backend="reference")
    return [out.detach(), *torch.autograd.grad(out, wide, grad_out)]


def check_case(name, shape, dtype, mask_kind, noncontig, act="none", backend="cuda"):
    label = f"{name} [{backend}, {act}]"
    print(f"[case] {label} {shape} {str(dtype)[6:]} mask={mask_kind}{' noncontig' if noncontig else ''}", flush=True)
    tensors, mask = make_inputs(shape, dtype, mask_kind, noncontig)
    if backend == "cuda":
        cfg, line = config_line(shape, dtype, act)
        print(f"    {line}", flush=True)
    why = refusal(backend, tensors)
    if why:
        print(f"    (refused: {why}; skipped)")
        return
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = ops.mpnn_message_sum(*leaves, mask, out_act=act, backend=backend)
    grad_out = torch.randn(out.shape, generator=torch.Generator(device=DEVICE).manual_seed(7), device=DEVICE,
                           dtype=torch.float64)
    grads = torch.autograd.grad(out, leaves, grad_out.to(dtype))
    sync()
    want = reference(tensors, mask, act, grad_out)
    rtol, atol = registry.get_backend(backend).tolerance(dtype)
    worst = []
    for what, g, w in zip(NAMES, [out, *grads], want):
        g = g.detach()
        if g.numel() == 0:
            continue
        scale = max(1.0, float(w.abs().max()))
        err = (g.double() - w).abs()
        allowed = atol * scale + rtol * w.abs()
        ratio = float((err / allowed).max())
        finite = bool(torch.isfinite(g).all())
        worst.append(f"{what} {float(err.max()):.1e}")
        if ratio > 1 or not finite:
            FAILURES.append(f"{label}: {what}")
            print(f"    FAIL {what}: max err {float(err.max()):.3e} = {ratio:.1f}x tolerance (scale {scale:.3g}), "
                  f"finite={finite}")
            print(where(what, g, w, tensors, mask, atol * scale), flush=True)
    # determinism (the cuda backend promises it): the same inputs give the same bits
    same = "n/a"
    if backend == "cuda":
        again = ops.mpnn_message_sum(*leaves, mask, out_act=act, backend=backend)
        grads2 = torch.autograd.grad(again, leaves, grad_out.to(dtype))
        same = torch.equal(again, out) and all(torch.equal(a, b) for a, b in zip(grads, grads2))
        if not same:
            FAILURES.append(f"{label}: not deterministic")
            print("    FAIL: a second run gave different bits")
    print(f"    max errors: {', '.join(worst)}; deterministic: {same}", flush=True)


# ------------------------------------------------------------------ gradcheck, opcheck, compile
def api_checks(backend, act):
    """gradcheck (float64), torch.library.opcheck and torch.compile(fullgraph=True) of one
    backend and out_act form on small masked inputs (a fully masked graph included)."""
    tensors, mask = make_inputs((3, 5, 2, 2, 6, 5, 3), torch.float64, "random", seed=11)
    mask[1] = True
    label = f"[{backend}, {act}]"
    why = refusal(backend, tensors)
    if why:
        print(f"[api] {label} refused: {why}; skipped")
        return
    fn = functools.partial(ops.mpnn_message_sum, out_act=act, backend=backend)
    checks = {
        "gradcheck": lambda: torch.autograd.gradcheck(
            lambda *a: fn(*a, mask), [t.detach().clone().requires_grad_() for t in tensors],
            eps=1e-6, atol=1e-5, rtol=1e-4),
        "opcheck": lambda: torch.library.opcheck(
            torch.ops.mimo_fast.mpnn_message_sum.default,
            (*[t.detach().clone().requires_grad_() for t in tensors], mask, act, backend)),
        "compile": lambda: compile_check(fn, [t.float() for t in tensors], mask),
    }
    for what, run in checks.items():
        print(f"[api] {label} {what}", flush=True)
        try:
            run()
            sync()
            print("    ok", flush=True)
        except Exception:  # noqa: BLE001 - report and go on
            FAILURES.append(f"{label}: {what}")
            print("    FAIL:\n" + traceback.format_exc(), flush=True)


def compile_check(fn, tensors, mask):
    """torch.compile(fullgraph=True) of a loss through the op: value and gradients as eager."""
    torch._dynamo.reset()

    def loss(*xs):
        return fn(*xs, mask).square().sum()

    compiled = torch.compile(loss, fullgraph=True)
    eager_args = [t.detach().clone().requires_grad_() for t in tensors]
    comp_args = [t.detach().clone().requires_grad_() for t in tensors]
    l_eager, l_comp = loss(*eager_args), compiled(*comp_args)
    torch.testing.assert_close(l_comp, l_eager)
    for a, b in zip(torch.autograd.grad(l_comp, comp_args), torch.autograd.grad(l_eager, eager_args)):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ timing
def timed(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flops(shape, mask, act="none"):
    B, N, F, E, H1, H2, Fo = shape
    pairs = float(B * N * (N - 1)) if mask is None else float((mask.sum(-1) * (mask.sum(-1) - 1)).sum())
    per_pair = 2 * H1 * H2 + 2 * E * H1 + (2 * H2 * Fo if act == "relu" else 0)
    return pairs * per_pair + B * N * (4 * F * H1 + (2 * H2 * Fo if act == "none" else 0))


def cuda_trusted(*a, out_act="none"):
    """The cuda backend without the op's NaN/inf scans of the inputs (kernels and glue only)."""
    with trusted_inputs():
        return ops.mpnn_message_sum(*a, out_act=out_act, backend="cuda")


def timing(with_compile, acts):
    from mimo_fast.bench import baselines
    for act in acts:
        careful = baselines.mpnn_careful if act == "none" else baselines.mpnn_careful_relu
        impls = {"reference": lambda *a: ops.mpnn_message_sum(*a, out_act=act, backend="reference"),
                 "triton": lambda *a: ops.mpnn_message_sum(*a, out_act=act, backend="triton"),
                 "careful": careful,
                 "cuda": lambda *a: ops.mpnn_message_sum(*a, out_act=act, backend="cuda"),
                 "cuda-nochk": functools.partial(cuda_trusted, out_act=act)}
        if with_compile:
            impls["compiled"] = torch.compile(careful, mode="max-autotune", dynamic=False)
        timing_act(impls, act)


def timing_act(impls, act):
    for key, shape in SHAPES.items():
        tensors, _ = make_inputs(shape, torch.float32, "none")
        print(f"[timing] {key} {shape} float32 out_act={act} (mask: last quarter of nodes absent in half the batch)",
              flush=True)
        mask = torch.ones(shape[:2], dtype=torch.bool, device=DEVICE)
        mask[: shape[0] // 2, shape[1] - shape[1] // 4:] = False
        print(f"    {config_line(shape, torch.float32, act)[1]}")
        want = ops.mpnn_message_sum(*tensors, mask, out_act=act, backend="reference")
        res = {}
        for name, fn in impls.items():
            if name in ("triton", "cuda", "cuda-nochk"):
                why = refusal(name.removesuffix("-nochk"), tensors)
                if why:
                    print(f"    {name:9s} skipped: {why}")
                    continue
            try:
                got = fn(*tensors, mask)
                rel = float((got - want).abs().max() / want.abs().max())
                leaves = [t.detach().clone().requires_grad_() for t in tensors]

                def fwd():
                    with torch.no_grad():
                        fn(*tensors, mask)

                def fwd_bwd():
                    out = fn(*leaves, mask)
                    torch.autograd.grad(out.square().sum(), leaves)
                tf, tb = timed(fwd), timed(fwd_bwd)
                res[name] = (tf, tb)
                print(f"    {name:10s} fwd {tf * 1e3:8.3f} ms  fwd+bwd {tb * 1e3:8.3f} ms  (max rel diff vs reference {rel:.1e})",
                      flush=True)
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                print(f"    {name:9s} failed: {type(exc).__name__}: {str(exc)[:300]}")
        if "cuda" in res:
            tf, tb = res["cuda"]
            fl = flops(shape, mask, act)
            print(f"    cuda: {fl / tf / 1e12:.2f} TFLOP/s fwd, {3 * fl / tb / 1e12:.2f} TFLOP/s fwd+bwd (useful flops)")
            for other, (of, ob) in res.items():
                if other != "cuda":
                    print(f"    cuda speed-up vs {other:10s}: fwd {of / tf:6.2f}x  fwd+bwd {ob / tb:6.2f}x")
        if "cuda" in res:
            profile(tensors, mask, act)


def profile(tensors, mask, act):
    from torch.profiler import ProfilerActivity, profile as prof
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(3):
            out = ops.mpnn_message_sum(*leaves, mask, out_act=act, backend="cuda")
            torch.autograd.grad(out.square().sum(), leaves)
        torch.cuda.synchronize()
    print("    cuda backend, 3 x fwd+bwd, GPU time by kernel:")
    table = p.key_averages().table(sort_by="cuda_time_total", row_limit=12)
    print("\n".join("      " + line for line in table.splitlines()), flush=True)


def sanitizer():
    tool = shutil.which("compute-sanitizer")
    if tool is None:
        print("[sanitizer] compute-sanitizer not on PATH: skipped")
        return
    for check in ("memcheck", "racecheck"):
        cmd = [tool, "--tool", check, "--error-exitcode", "3", sys.executable, str(pathlib.Path(__file__).resolve()),
               "--cases", ",".join(SANITIZER_CASES), "--no-timing", "--no-api", "--backends", "cuda"]
        print(f"[sanitizer] {check}: {' '.join(cmd)}", flush=True)
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        except subprocess.TimeoutExpired:
            print(f"    {check} timed out after 240 s")
            continue
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-25:])
        print("\n".join("    " + line for line in tail.splitlines()))
        if res.returncode != 0:
            FAILURES.append(f"compute-sanitizer {check} (exit {res.returncode})")


def environment():
    p = torch.cuda.get_device_properties(0)
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); GPU {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
    print(f"_C_cuda build: {_ext.C_CUDA.build_info}; device_status {_ext.C_CUDA.device_status()}")
    print(f"limits (SMs, smem/block opt-in, smem/SM): {_ext.C_CUDA.mpnn_message_sum_device_limits(0)}")
    print(f"backends for a CUDA float32 S1 input: {registry.explain(OP, tuple(make_inputs(SHAPES['S1'], torch.float32, 'none')[0]))}")


def emulate(path):
    """Run the correctness part on the CPU through the CPU emulation of the kernels
    (tests/test_mpnn_message_sum_cuda_emulation.py builds it): a test of this script."""
    global DEVICE
    DEVICE = "cpu"
    spec = importlib.util.spec_from_file_location("_cuda_emulation", path)
    emu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emu)
    from mimo_fast.ops.cuda import mpnn_message_sum as glue
    _ext.C_CUDA = emu
    glue._launch_config.cache_clear()
    glue._launch_context = lambda t: (contextlib.nullcontext(), 0)
    cuda = registry.get_backend("cuda")
    cuda.devices, cuda.unavailable = ("cuda", "cpu"), lambda: None


START = time.perf_counter()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer correctness cases")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(max-autotune) (slow to compile)")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--sanitizer", action="store_true", help="compute-sanitizer memcheck + racecheck of tiny cases")
    ap.add_argument("--backends", default="cuda,triton", help="comma-separated backends to check (default: cuda,triton)")
    ap.add_argument("--acts", default="none,relu", help="comma-separated out_act forms (default: none,relu)")
    ap.add_argument("--no-api", action="store_true", help="skip gradcheck / opcheck / compile")
    ap.add_argument("--emulate", default="", help=argparse.SUPPRESS)  # path of the CPU emulation module
    args = ap.parse_args()
    if args.emulate:
        emulate(args.emulate)
        args.no_timing = True
    elif not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch")
    if _ext.C_CUDA is None:
        sys.exit(f"mimo_fast._C_cuda is missing ({_ext.C_CUDA_REASON}): pip install . on this machine first")
    if DEVICE == "cuda":
        environment()
    chosen = set(args.cases.split(",")) if args.cases else (QUICK if args.quick else {c[0] for c in CASES})
    backends = [b for b in args.backends.split(",") if b]
    acts = [a for a in args.acts.split(",") if a]
    assert set(acts) <= set(ACTS), acts
    for_triton = chosen if args.cases else chosen & TRITON_CASES
    # cuda's cases first (fast), then the API checks, then triton's (compiles)
    runs = [(case, act, "cuda") for case in CASES if case[0] in chosen for act in acts if "cuda" in backends]
    runs += [(None, act, b) for act in acts for b in backends if not args.no_api]
    runs += [(case, act, b) for b in backends if b != "cuda" for case in CASES
             if case[0] in (for_triton if b == "triton" else chosen) for act in acts]
    for case, act, b in runs:
        try:
            if case is None:
                api_checks(b, act)
            else:
                check_case(*case, act=act, backend=b)
        except Exception:  # noqa: BLE001 - report, continue unless the context is gone
            FAILURES.append(f"{case[0] if case else 'api'} [{b}, {act}]: exception")
            print("    EXCEPTION:\n" + traceback.format_exc(), flush=True)
            try:
                sync()
            except Exception:  # noqa: BLE001
                print("    the CUDA context is unusable after this error: stopping the checks")
                break
    if not args.no_timing and not FAILURES:
        timing(args.compile, acts)
    elif FAILURES:
        print("[timing] skipped: correctness failures above")
    if args.sanitizer:
        sanitizer()
    print(f"[done] {time.perf_counter() - START:.0f} s", flush=True)
    print("\nRESULT:", "PASS" if not FAILURES else f"FAIL ({len(FAILURES)}): " + "; ".join(FAILURES), flush=True)
    if FAILURES:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
