"""bench/gpu_session.sh and the Python it runs, checked without a GPU: the GPU machine is
lent rarely and briefly, so the script must work the first time it runs there.

* syntax (bash -n, py_compile) and imports of the scripts it runs (bench/bench_gpu.py,
  bench/report.py, tools/gpu_profile.py); the tests/gpu files it runs exist and are marked gpu;
* the phase structure: every phase runs under a time limit, the limits and the report
  sum to <= 540 s (9 minutes), each limit covers its estimate;
* --dry-run prints every phase and writes the (empty) report, at most 8 files in $OUT;
* a run with fake python/pytest/nvidia-smi (tmp_path/bin) through every phase: the
  plumbing from the tools' outputs to summary.md/json (test counts, targets);
* a hanging phase is killed at its limit and the later phases are skipped, within the budget;
* bench_gpu's case list (out_act forms, compiled only at the target shapes, the shape cut)
  and its ReLU baselines against the loop oracle; bench/report.py's target arithmetic, and
  its other kinds reproducing the committed tables under bench/results/<machine>/.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import py_compile
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TOOLS = ROOT / "tools"
SCRIPT = BENCH / "gpu_session.sh"
PY_SCRIPTS = [BENCH / "bench_gpu.py", BENCH / "report.py", TOOLS / "gpu_profile.py"]
#: the session's tests/gpu checks: name -> files (run in tests/gpu with -m gpu)
GPU_CHECKS = {"ep_amp": ["test_gpu_ep_lmmse.py", "test_gpu_amp_step.py"], "mpnn": ["test_gpu_mpnn_message_sum.py"]}
PHASES = ["env", "build", "validate", "bench", "compiled", "overhead"]
OUT_FILES = {"summary.md", "summary.json", "gpu.json", "build.log", "tests.log", "checks.log", "bench.log",
             "extra.tar.gz"}
BUDGET = 540

needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


@pytest.fixture(scope="module")
def bench_modules():
    """bench_gpu, gpu_profile and bench/report.py (imported as a module named bench_report: a
    bare `report` could be another package's)."""
    sys.path[:0] = [str(BENCH), str(TOOLS)]
    try:
        import bench_gpu
        import gpu_profile
        spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
        report = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(report)
        yield bench_gpu, gpu_profile, report
    finally:
        for p in (BENCH, TOOLS):
            sys.path.remove(str(p))


def _plan():
    """(name, limit, estimate) of every phase in the script's PLAN array."""
    body = re.search(r"^PLAN=\((.*?)\)", SCRIPT.read_text(), re.M | re.S)[1]
    words = body.split()
    return [(words[i], int(words[i + 1]), int(words[i + 2])) for i in range(0, len(words), 3)]


# ------------------------------------------------------------------ static checks
@needs_bash
def test_script_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.parametrize("path", PY_SCRIPTS, ids=lambda p: p.name)
def test_python_scripts_compile(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / (path.name + "c")), doraise=True)


def test_bench_scripts_import_without_gpu(bench_modules):
    bench_gpu, gpu_profile, report = bench_modules
    assert callable(bench_gpu.test_gpu) and callable(gpu_profile.main) and callable(report.main)


def test_phases_have_limits_within_the_budget():
    text = SCRIPT.read_text()
    plan = _plan()
    assert [p[0] for p in plan] == PHASES
    assert re.findall(r'^\s*(?:if )?phase (\w+) "\$\w+_CMD"', text, re.M) == PHASES      # run in that order
    report_s = int(re.search(r"^REPORT_S=(\d+)", text, re.M)[1])
    assert int(re.search(r"^BUDGET_S=\$\{BUDGET_S:-(\d+)\}", text, re.M)[1]) <= BUDGET
    assert sum(p[1] for p in plan) + report_s <= BUDGET, plan
    for name, limit, est in plan:
        assert est < limit, f"{name}: estimate {est} s does not fit its limit {limit} s"
    # the runner: every phase under `timeout`, clamped to what is left of the budget
    body = text[text.index("phase() {"):text.index("\n}\n", text.index("phase() {"))]
    assert 'timeout -k 5 "$((limit - 5))" bash -c "$cmd"' in body
    assert "BUDGET_S - REPORT_S" in body
    # the report has its own limit; the check scripts beside pytest have theirs
    assert re.search(r'timeout -k 2 "\$\(\(REPORT_S - 3\)\)" "\$PY" bench/report.py gpu', text)
    assert text.count('(cd tests/gpu && timeout -k 5 150 "$PYTEST" -v -p no:cacheprovider -m gpu') == 1
    runs = [m.start() for m in re.finditer(r'"\$PYTEST"', text)]
    assert len(runs) == 4                                     # op tests, tests/gpu checks, bench, compiled
    for i in runs:                                                        # each with per-test limits
        assert re.search(r"--timeout \d+", text[i:text.index("\n", text.index("\n", i) + 1)]), text[i:i + 200]


def test_script_builds_for_one_arch_with_cuda_required():
    text = SCRIPT.read_text()
    assert "MIMO_FAST_CUDA=ON" in text
    assert '-C cmake.define.MIMO_FAST_CUDA_ARCHITECTURES="$ARCH"' in text
    assert "compute_cap" in text and "get_device_capability" in text


def test_gpu_checks_name_existing_gpu_marked_files():
    """The tests/gpu files the session runs with -m gpu exist and are marked gpu (else -m gpu
    would select nothing and the phase would pass empty)."""
    text = SCRIPT.read_text()
    for name, files in GPU_CHECKS.items():
        assert re.search(rf'^\s*check {name} "?{" ".join(files)}"? & p\d=\$!$', text, re.M), name
        for f in files:
            assert "pytestmark = MARKS" in (ROOT / "tests" / "gpu" / f).read_text(), f
    assert "pytest.mark.gpu" in (ROOT / "tests" / "gpu" / "gpu_support.py").read_text()
    assert re.search(r'^\s*"gpu: ', (ROOT / "pyproject.toml").read_text(), re.M)


def test_test_selection_names_existing_files():
    files = sorted(p.name for p in (ROOT / "tests").glob("test_*.py"))
    chosen = [f for f in files if re.match(r"test_(mpnn_message_sum|ep_lmmse|amp_step)", f)
              and not f.endswith(("_cpu.py", "_emulation.py"))]
    assert {"test_mpnn_message_sum.py", "test_ep_lmmse.py", "test_amp_step.py"} <= set(chosen)
    for extra in ("test_registry.py", "test_validate.py", "test_triton_launch.py"):
        assert extra in files and extra in SCRIPT.read_text()


@pytest.mark.skipif(shutil.which("g++") is None, reason="the MPNN emulation needs g++")
def test_gpu_tests_run_under_the_host_emulators():
    """The tests/gpu checks, run the way the session runs them (in tests/gpu, -m gpu) but on the
    CPU through the kernels' host emulators (MIMO_FAST_GPU_TESTS=emulate), a few cases each:
    their code works before a GPU is lent."""
    pytest_bin = pathlib.Path(sys.executable).parent / "pytest"
    if not pytest_bin.exists():
        pytest.skip("no pytest console script beside this interpreter")
    files = [f for fs in GPU_CHECKS.values() for f in fs]
    env = dict(os.environ, MIMO_FAST_GPU_TESTS="emulate", OMP_NUM_THREADS="1")
    res = subprocess.run([str(pytest_bin), "-q", "-p", "no:cacheprovider", "-m", "gpu", *files, "-k",
                          "(ep_lmmse and K16) or (amp_step and first) or tiny-cuda-none"],
                         cwd=ROOT / "tests" / "gpu", env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and " passed" in out and "failed" not in out, out[-3000:]
    assert re.search(r"\b([4-9]|\d\d+) passed", out), out[-500:]


# ------------------------------------------------------------------ bench_gpu
def test_bench_cases(bench_modules, monkeypatch):
    bench_gpu = bench_modules[0]
    ids = ["-".join(c) for c in bench_gpu.cases()]
    assert "mpnn-S1-relu-cuda-fwd" in ids and "mpnn-S1-triton-fwd+bwd" in ids
    assert "ep-B4096-K16-linalg-fwd" in ids
    compiled = {i for i in ids if "compiled" in i}
    assert compiled == {"mpnn-S1-compiled-fwd", "mpnn-S1-relu-compiled-fwd", "ep-B4096-K16-compiled-fwd",
                        "amp-B16-1024x1024-compiled-fwd"}
    assert not any(i.endswith("checked-fwd+bwd") for i in ids)
    # the session's cut and its two -k selections ("not compiled and not cuda", "cuda and not compiled")
    session = re.search(r"BENCH_SHAPES=\$\{BENCH_SHAPES:-([^}]+)\}", SCRIPT.read_text())[1]
    monkeypatch.setenv(bench_gpu.SHAPES_ENV, session)
    cut = ["-".join(c) for c in bench_gpu.cases()]
    assert not any("-S2-" in i for i in cut) and any("-S3-" in i for i in cut)
    assert compiled <= set(cut)
    cuda = [i for i in cut if "cuda" in i and "compiled" not in i]
    assert cuda and all(c[2] in ("cuda", "cuda-checked") for c in bench_gpu.cases() if "-".join(c) in cuda)
    monkeypatch.setenv(bench_gpu.COMPILED_ENV, "all")
    assert "mpnn-S3-compiled-fwd+bwd" in ["-".join(c) for c in bench_gpu.cases()]


def test_relu_baselines_match_the_oracle(bench_modules):
    bench_gpu = bench_modules[0]
    from op_samples import mpnn_oracle, mpnn_sample

    for mask in (None, torch.tensor([[True, False, True, True], [True, True, True, True]])):
        s = mpnn_sample("b", 2, 4, 3, 2, 5, 6, 7, torch.float64, seed=3, mask=mask, out_act="relu")
        want = mpnn_oracle(*s.args, out_act="relu")
        for f in (bench_gpu.mpnn_naive_relu, bench_gpu.mpnn_careful_relu):
            torch.testing.assert_close(f(*s.args), want)
        assert bench_gpu.baseline("mpnn", "S1-relu", "careful") is bench_gpu.mpnn_careful_relu
        assert bench_gpu.op_kwargs("mpnn", "S1-relu") == {"out_act": "relu"}


# ------------------------------------------------------------------ bench/report.py gpu
def _rec(op, shape, impl, median_ms, mode="fwd", **kw):
    return dict(op=op, shape=shape, impl=impl, mode=mode, median_s=median_ms / 1e3, min_s=median_ms / 1e3,
                gbps=1.0, tflops=1.0, gpu="Fake GPU", **kw)


FAKE_RECORDS = [
    _rec("mpnn_message_sum", "S1", "careful", 1.0), _rec("mpnn_message_sum", "S1", "compiled", 0.4),
    _rec("mpnn_message_sum", "S1", "triton", 0.5), _rec("mpnn_message_sum", "S1", "cuda", 0.1),
    _rec("ep_lmmse", "B4096-K16", "linalg", 0.5), _rec("ep_lmmse", "B4096-K16", "cuda", 0.05),
    _rec("amp_step", "B16-1024x1024", "cuda", 0.2, bytes=4e8),
    _rec("peak", "1GiB", "copy", 1.0, bytes=2e9),
]


def test_report_targets(bench_modules, tmp_path):
    report = bench_modules[2]
    recs = tmp_path / "r.jsonl"
    recs.write_text("\n".join(json.dumps(r) for r in FAKE_RECORDS) + "\n{cut line")
    md, js = tmp_path / "s.md", tmp_path / "s.json"
    assert report.main([str(recs), "--md", str(md), "--json", str(js)]) == 0        # kind: JSON lines -> gpu
    t = {x["target"]: x for x in json.loads(js.read_text())["targets"]}
    assert t["MPNN S1 fwd vs eager (careful) [cuda]"]["value"] == pytest.approx(10) and \
        t["MPNN S1 fwd vs eager (careful) [cuda]"]["met"]
    assert t["MPNN S1 fwd vs eager (careful) [triton]"]["met"] is False
    assert t["MPNN S1 fwd vs torch.compile(max-autotune) [cuda]"]["value"] == pytest.approx(4)
    assert t["MPNN S1-relu fwd vs eager (careful) [cuda]"]["met"] is None          # not measured
    assert t["EP LMMSE B4096 K16 fwd vs cuSOLVER (torch.linalg) [cuda]"]["value"] == pytest.approx(10)
    amp = t["AMP step B16 1024x1024 fwd, share of copy bandwidth [cuda]"]
    assert amp["value"] == pytest.approx((4e8 / 2e-4) / (2e9 / 1e-3)) and amp["met"]
    assert "## mpnn_message_sum" in md.read_text()


def test_report_counts_a_killed_pytest_from_its_log(bench_modules, tmp_path):
    report = bench_modules[2]
    log = tmp_path / "tests.log"
    log.write_text(
        "[gw0] [  1%] PASSED test_ep_lmmse.py::test_values[basic-float32-cuda-triton] \n"
        "[gw1] [  2%] FAILED test_ep_lmmse.py::test_values[basic-float32-cuda-cuda] \n"
        "[gw2] [  3%] SKIPPED test_amp_step_cuda.py::test_geometry[H100] \n"
        "FAILED test_ep_lmmse.py::test_values[basic-float32-cuda-cuda] - AssertionError: x\n")
    t = report.load_junit(str(tmp_path / "missing.xml")) or report.load_testlog(str(log))
    assert t["total"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert t["by_backend"] == {"triton": {"passed": 1}, "cuda": {"failed": 1, "skipped": 1}}


# ------------------------------------------------------------------ bench/report.py, the other kinds
RESULTS = BENCH / "results"
#: (kind, inputs, table): committed tables that start with today's report of their JSON (notes
#: written by hand may follow); the kind is read from the JSON
REPORTS = [
    ("op", ["xeon-2core-avx512/amp_step_cpu.json"], "xeon-2core-avx512/amp_step_cpu.md"),
    ("op", ["xeon-2core-avx512/ep_lmmse_cpu.json"], "xeon-2core-avx512/ep_lmmse_cpu.md"),
    ("ep_detector", ["xeon-2core-avx512/ep_detector.json", "xeon-2core-avx512/ep_detector_sionna.json"],
     "xeon-2core-avx512/ep_detector.md"),
    ("mpnn_message_sum", ["epyc-2core-avx512/mpnn_message_sum_relu_cpu.json"],
     "epyc-2core-avx512/mpnn_message_sum_relu_cpu.md"),
]


@pytest.mark.parametrize("kind,inputs,table", REPORTS, ids=[r[2].split("/")[-1] for r in REPORTS])
def test_report_reproduces_the_committed_tables(bench_modules, capsys, kind, inputs, table):
    report = bench_modules[2]
    paths = [str(RESULTS / p) for p in inputs]
    assert report.detect_kind(paths[0]) == kind
    assert report.main(paths) == 0
    out = capsys.readouterr().out
    assert out.count("\n|") >= 3 and (RESULTS / table).read_text().startswith(out)


def test_report_learned_rows_and_named_kind(bench_modules, capsys):
    """learned_cpu.md's header was edited by hand (quiet machine); its table is the report's."""
    report = bench_modules[2]
    path = str(RESULTS / "xeon-2core-avx512/learned_cpu.json")
    assert report.main(["learned", path]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    assert rows[1:] == ["| gepnet inference | 809 | 4169 | 5.2x |", "| ampgnn inference | 1714 | 16238 | 9.5x |",
                        "| gepnet training step | 288 | 1232 | 4.3x |", "| ampgnn training step | 637 | 7785 | 12.2x |"]
    assert all(r in (RESULTS / "xeon-2core-avx512/learned_cpu.md").read_text() for r in rows)
    with pytest.raises(SystemExit, match="no options"):
        report.main(["op", path, "--md", "x.md"])


# ------------------------------------------------------------------ running the script
def _run(tmp_path, *args, env=None, timeout=60):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    e = dict(os.environ, OUT=str(out), TMPDIR=str(tmp_path), PYTHON=sys.executable)
    e.update(env or {})
    t0 = time.time()
    res = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=e, timeout=timeout)
    return res, out, time.time() - t0


@needs_bash
def test_dry_run(tmp_path):
    res, out, _ = _run(tmp_path, "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    for name in PHASES:
        assert f"phase {name}: start" in res.stdout
    assert res.stdout.count("would run") == len(PHASES)
    files = {p.name for p in out.iterdir()}
    assert files <= OUT_FILES and {"summary.md", "summary.json"} <= files
    summary = json.loads((out / "summary.json").read_text())
    assert [p["name"] for p in summary["phases"]] == PHASES
    # nothing ran, so every phase may use what the earlier ones left, and never less than its own limit
    own = {name: limit for name, limit, _ in _plan()}
    assert all(p["timeout_s"] >= own[p["name"]] for p in summary["phases"])
    assert summary["phases"][0]["timeout_s"] == own["env"]
    assert BUDGET - 13 <= summary["phases"][-1]["timeout_s"] <= BUDGET - 10
    assert not list(tmp_path.glob("mimo-fast-gpu-work.*"))                 # work folder removed


FAKE_PY = r"""#!/usr/bin/env bash
# a fake python3: the real one for the report, canned answers for the rest
case "$1" in
  bench/report.py) exec "$REAL_PY" "$@" ;;
  -m) echo "fake: pip $*"; exit 0 ;;
  -) cat > /dev/null; echo "fake: _C_cuda imported"; exit 0 ;;
  -c) [[ $2 == *cli* ]] && echo "fake info" || echo "torch fake"; exit 0 ;;
  tools/gpu_profile.py)
    while (($#)); do [[ $1 == --json ]] && json=$2; shift; done
    echo '{"gpu": "Fake GPU", "overhead": [{"op": "ep", "shape": "B1-K4", "backend": "cuda", "variant": "graph",
      "ok": true, "us_pipelined": 3.0, "us_synced": 9.0}], "breakdown": []}' > "$json"; exit 0 ;;
esac
echo "fake python: unexpected $*" >&2; exit 3
"""
FAKE_PYTEST = r"""#!/usr/bin/env bash
for a in "$@"; do [[ $prev == --junitxml ]] && xml=$a; [[ $prev == -k ]] && k=$a; [[ $prev == -m ]] && m=$a; prev=$a; done
if [[ $m == gpu ]]; then    # the tests/gpu checks
  [[ $PWD == */tests/gpu ]] || { echo "fake pytest: -m gpu run outside tests/gpu ($PWD)"; exit 4; }
  for f in "$@"; do [[ $f == *.py && ! -f $f ]] && { echo "fake pytest: no $f"; exit 4; }; done
  if [[ $* == *mpnn* ]]; then echo "FAILED test_gpu_mpnn_message_sum.py::test_x[tiny-cuda-none]"; echo "== 1 failed, 3 passed in 2.0s =="; exit 1; fi
  echo "== 9 passed in 1.0s =="; exit 0
fi
if [[ -n $xml ]]; then
  cat > "$xml" <<EOF
<?xml version="1.0"?><testsuites><testsuite tests="3" time="1.5">
<testcase classname="test_ep_lmmse" name="test_values[basic-float32-cuda-triton]"/>
<testcase classname="test_ep_lmmse" name="test_values[basic-float32-cuda-cuda]"><failure message="boom"/></testcase>
<testcase classname="test_ep_lmmse_cuda" name="test_geometry"><skipped/></testcase>
</testsuite></testsuites>
EOF
  echo "1 failed, 1 passed, 1 skipped"; exit 1
fi
case $k in
  "not compiled and not cuda") echo '{"op": "ep_lmmse", "shape": "B4096-K16", "impl": "linalg", "mode": "fwd", "median_s": 0.001, "gpu": "Fake GPU"}' >> "$MIMO_FAST_GPU_BENCH_RECORDS" ;;
  "cuda and not compiled") echo '{"op": "ep_lmmse", "shape": "B4096-K16", "impl": "cuda", "mode": "fwd", "median_s": 0.0001}' >> "$MIMO_FAST_GPU_BENCH_RECORDS" ;;
esac
echo "fake pytest -k $k: ok"; exit 0
"""
FAKE_SMI = r"""#!/usr/bin/env bash
[[ $* == *compute_cap\ * || $* == *noheader* ]] && { echo "9.0"; exit 0; }
[[ -n $FAKE_HANG ]] && exec sleep 100
echo "name, compute_cap"; echo "Fake GPU, 9.0"
"""


def _fake_bin(tmp_path):
    b = tmp_path / "bin"
    b.mkdir()
    for name, text in (("python3", FAKE_PY), ("pytest", FAKE_PYTEST), ("nvidia-smi", FAKE_SMI)):
        (b / name).write_text(text)
        (b / name).chmod(0o755)
    return {"PYTHON": str(b / "python3"), "REAL_PY": sys.executable,
            "PATH": f"{b}{os.pathsep}{os.environ['PATH']}"}


@needs_bash
def test_fake_run_through_every_phase(tmp_path):
    res, out, _ = _run(tmp_path, env=_fake_bin(tmp_path))
    log = res.stdout + res.stderr
    assert res.returncode == 1, log                      # the fake mpnn check and one test fail
    files = {p.name for p in out.iterdir()}
    assert files <= OUT_FILES and {"summary.md", "summary.json", "gpu.json", "tests.log", "checks.log",
                                   "bench.log", "extra.tar.gz"} <= files, files
    s = json.loads((out / "summary.json").read_text())
    status = {p["name"].strip(): p["status"] for p in s["phases"]}
    assert status["build"] == status["bench"] == status["compiled"] == status["overhead"] == "ok", status
    assert status["validate"].startswith("FAILED") and status["tests/gpu mpnn"].startswith("FAILED")
    assert status["tests/gpu ep_amp"] == "ok" and status["pytest (op tests)"].startswith("FAILED")
    assert s["tests"]["total"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert s["tests"]["by_backend"]["cuda"] == {"failed": 1, "skipped": 1}
    ep = {t["target"]: t for t in s["targets"]}["EP LMMSE B4096 K16 fwd vs cuSOLVER (torch.linalg) [cuda]"]
    assert ep["value"] == pytest.approx(10) and ep["met"]
    md = (out / "summary.md").read_text()
    assert "| ep | B1-K4 | cuda |" in md and "boom" in md
    checks = (out / "checks.log").read_text()
    assert "FAILED test_gpu_mpnn_message_sum.py" in checks and "9 passed" in checks
    assert "failed phases: validate" in res.stdout


@needs_bash
def test_a_hanging_phase_is_cut_and_the_budget_holds(tmp_path):
    # env's limit: min(15, BUDGET_S - REPORT_S) = 7 s (6 if a second ticks first), so `timeout 2`
    # (or 1); then at most 5 s are left, under MIN_PHASE_S: build and the rest are skipped
    env = dict(_fake_bin(tmp_path), BUDGET_S="17", MIN_PHASE_S="6", FAKE_HANG="1")
    res, out, took = _run(tmp_path, env=env)
    assert took < 17, took
    s = json.loads((out / "summary.json").read_text())
    status = {p["name"]: p["status"] for p in s["phases"]}
    assert status["env"] == "TIMEOUT" and status["build"] == "skipped", status
    assert res.returncode != 0 and (out / "summary.md").exists()
