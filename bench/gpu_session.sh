#!/usr/bin/env bash
# A lent GPU machine's validation run, in one command, in at most BUDGET_S = 540 s (9 min):
#
#   env       GPU, driver, toolkit, torch/triton versions, commit
#   build     pip install with MIMO_FAST_CUDA=ON for this GPU's architecture only (a CUDA
#             compile failure stops the run, loudly); then imports _C_cuda from the install
#   validate  the op tests on CUDA tensors (triton, cuda and reference backends: values,
#             gradients, float64 gradcheck, opcheck, torch.compile, both MPNN out_act forms;
#             tests/test_{mpnn_message_sum,ep_lmmse,amp_step}*.py without the CPU-only *_cpu
#             and *_emulation files, plus test_registry/test_validate/test_triton_launch,
#             -k selecting the CUDA cases), pytest-xdist, per-test timeouts; at the same time,
#             in two more pytest processes, the `gpu`-marked tests in tests/gpu/ (the cuda
#             kernels case by case, with the launch geometry in every failure): test_gpu_ep_lmmse.py
#             + test_gpu_amp_step.py, and test_gpu_mpnn_message_sum.py (cuda and triton)
#   bench     bench/bench_gpu.py: naive/careful eager, cuSOLVER (torch.linalg), reference,
#             triton, cuda (trusted and -checked), at the cut shape set below; the cuda
#             cases in their own process, so a crashing kernel cannot lose the others
#   compiled  the torch.compile(mode="max-autotune") baseline at the target shapes (MPNN S1
#             both out_act forms first, then EP B4096 K16, AMP B16 1024x1024), forward
#   overhead  tools/gpu_profile.py --overhead: per-call cost of value checks, dispatch and
#             launch at small shapes, with and without CUDA graphs (trusted_inputs inside the
#             capture: the checks synchronise), then the time breakdown at the target shapes
#   report    bench/report.py gpu: summary.md / summary.json (phase times, pass/fail counts,
#             the issue's targets against the measured ratios, overhead), gpu.json (records)
#
# Every phase runs under `timeout` (PLAN below: each phase's own limit, plus what earlier
# phases left unused, never eating into the later phases' limits or the report's REPORT_S),
# so a hung phase costs at most its limit and the report is always written.
# Files in $OUT (default /tmp/mimo-fast-gpu; at most 8, as the device returns no more):
#   summary.md summary.json gpu.json build.log tests.log checks.log bench.log extra.tar.gz
# (extra.tar.gz: JUnit XML, pytest-benchmark JSONs, overhead JSON, env.txt, phases.tsv).
#
#   bash bench/gpu_session.sh [--dry-run] [--phases env,build,validate,bench,compiled,overhead]
#
# --dry-run prints each phase's command and limit without running it (no GPU needed), then
# writes the (empty) report. --phases runs a subset (e.g. a rerun on a warm machine that is
# already built: --phases validate,bench). Environment: PYTHON (python3 on PATH, which must
# hold torch with CUDA, triton, pytest, pytest-xdist, pytest-timeout, pytest-benchmark,
# hypothesis, scikit-build-core, pybind11, cmake, ninja: the device image does), BUDGET_S,
# XDIST_N (12), MIMO_FAST_CUDA_ARCHITECTURES (default: the GPU's compute capability).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

DRY=0
PHASES=env,build,validate,bench,compiled,overhead
while (($#)); do
  case $1 in
    --dry-run) DRY=1 ;;
    --phases) PHASES=$2; shift ;;
    --phases=*) PHASES=${1#--phases=} ;;
    all) ;;                                                   # the old positional forms
    tests) PHASES=env,build,validate ;;
    bench) PHASES=env,build,bench,compiled,overhead ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

OUT=${OUT:-/tmp/mimo-fast-gpu}; mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mimo-fast-gpu-work.XXXXXX")
PY=${PYTHON:-python3}
BIN=$(dirname "$(command -v "$PY")")   # the venv's bin (no readlink: its python3 links out of it)
# pytest's console script, not `python -m pytest`: that would put the source tree on sys.path
PYTEST=$BIN/pytest; [[ -x $PYTEST ]] || PYTEST=$(command -v pytest || echo "$BIN/pytest")
BUDGET_S=${BUDGET_S:-540}
REPORT_S=10
MIN_PHASE_S=${MIN_PHASE_S:-10}   # a phase with less time left than this is skipped
XDIST_N=${XDIST_N:-12}
export PY BIN PYTEST WORK OUT XDIST_N DRY
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16} PIP_BREAK_SYSTEM_PACKAGES=1
export MIMO_FAST_GPU_BENCH_RECORDS=$WORK/bench.jsonl
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s $(date -u +%H:%M:%S)] $*"; }
printf 'name\trc\tseconds\tlimit\testimate\tnote\n' > "$WORK/phases.tsv"
FAILED=""

# The phases, their own time limits and their estimates (seconds; where the estimates come
# from: above each command below). The limits and REPORT_S sum to BUDGET_S = 540
# (tests/test_gpu_session_script.py checks it). Time a phase leaves unused passes on to
# the next one; every later phase keeps its own limit.
#      name      limit  estimate
PLAN=( env       15     5
       build     140    80
       validate  165    110
       bench     75     45
       compiled  100    70
       overhead  35     20 )

# phase NAME COMMAND: run COMMAND (a bash string; exported variables only) under
# `timeout`, limited to what is left of BUDGET_S after REPORT_S and the own limits of the
# later phases (at least its own limit, unless earlier phases overran); one line in
# phases.tsv. Returns the command's status (124/137: time limit).
phase() {
  local name=$1 cmd=$2 limit="" est="" reserve=0 i t0 rc left
  for ((i = 0; i < ${#PLAN[@]}; i += 3)); do
    if [[ ${PLAN[i]} == "$name" ]]; then limit=${PLAN[i + 1]}; est=${PLAN[i + 2]}
    elif [[ -n $limit && ,$PHASES, == *,${PLAN[i]},* ]]; then reserve=$(( reserve + PLAN[i + 1] )); fi
  done
  if [[ ,$PHASES, != *,$name,* ]]; then
    printf '%s\tskip\t0\t%s\t%s\tnot asked for (--phases)\n' "$name" "$limit" "$est" >> "$WORK/phases.tsv"
    return 0
  fi
  left=$(( BUDGET_S - REPORT_S - ($(date +%s) - start) ))
  limit=$(( left - reserve > limit ? left - reserve : (left < limit ? left : limit) ))
  if (( limit < MIN_PHASE_S )); then
    stamp "phase $name: SKIPPED, only ${left}s of the ${BUDGET_S}s budget left"
    printf '%s\tskip\t0\t%s\t%s\tno time left in the budget\n' "$name" "$limit" "$est" >> "$WORK/phases.tsv"
    FAILED+=" $name"; return 1
  fi
  stamp "phase $name: start (limit ${limit}s, estimate ${est}s)"
  if (( DRY )); then
    printf '  would run (timeout -k 5 %s):\n%s\n' "$((limit - 5))" "$(sed 's/^/    /' <<< "$cmd")"
    printf '%s\tdry\t0\t%s\t%s\t\n' "$name" "$limit" "$est" >> "$WORK/phases.tsv"
    return 0
  fi
  t0=$(date +%s)
  timeout -k 5 "$((limit - 5))" bash -c "$cmd"; rc=$?
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$limit" "$est" \
    "$( ((rc == 124 || rc == 137)) && echo "killed at its time limit")" >> "$WORK/phases.tsv"
  [[ -f $WORK/sub.tsv ]] && { cat "$WORK/sub.tsv" >> "$WORK/phases.tsv"; rm -f "$WORK/sub.tsv"; }
  stamp "phase $name: exit $rc after $(( $(date +%s) - t0 ))s"
  (( rc != 0 )) && FAILED+=" $name"
  return $rc
}

# ---------------------------------------------------------------- what runs
# The estimates come from the last GPU run (2026-11-22, bench/results/h100/gpu_h100*.md, same
# H100 image; it logged the test time only) and this repo's last build (its ninja log);
# the rest are guesses, marked so. The limits leave ~1.5x.

ARCH=${MIMO_FAST_CUDA_ARCHITECTURES:-}
if [[ -z $ARCH ]]; then
  ARCH=$(timeout 20 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [[ $ARCH =~ ^[0-9]+$ ]] || (( DRY )) || ARCH=$(timeout 60 "$PY" -c \
    "import torch; print('%d%d' % torch.cuda.get_device_capability())" 2>/dev/null)
fi
if ! [[ $ARCH =~ ^[0-9]+[af]?$ ]]; then
  if (( DRY )); then ARCH=90; stamp "dry run: no GPU found, assuming sm_90"
  else stamp "no GPU compute capability from nvidia-smi or torch: is a GPU visible?"; ARCH=""; fi
fi
export ARCH

# env (estimate 5 s): nvidia-smi and two python imports.
ENV_CMD='{ date -u; nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.max.sm --format=csv;
  nvcc --version | tail -2; git rev-parse HEAD; echo "uncommitted files: $(git status --short | wc -l)";
  "$PY" -c "import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__)";
  echo "building for sm_$ARCH"; } > "$WORK/env.txt" 2>&1; cat "$WORK/env.txt"; [[ -n $ARCH ]]'

# build (estimate 80 s): configure ~10 s; the six .cu files took 23-43 s each in this repo's
# last build (2 busy cores, sm_80 + sm_90), about half that for one architecture and all in
# parallel on 16 cores; the _C module's LTO link ~25 s; pip ~10 s.
BUILD_CMD='[[ -n $ARCH ]] || { echo "no GPU architecture to build for"; exit 1; }
  MIMO_FAST_CUDA=ON "$PY" -m pip install --no-build-isolation --no-deps --no-index --force-reinstall -v \
    -C cmake.define.MIMO_FAST_CUDA_ARCHITECTURES="$ARCH" . > "$OUT/build.log" 2>&1 \
    || { echo "BUILD FAILED (the end of build.log):"; grep -n -i -m 20 "error" "$OUT/build.log"; tail -40 "$OUT/build.log"; exit 1; }
  cd "$WORK" && "$PY" - <<EOF 2>&1 | tee -a "$WORK/env.txt"
import mimo_fast
from mimo_fast import _ext
from mimo_fast.ops import registry
print("mimo_fast imported from", mimo_fast.__file__)
assert _ext.C_CUDA is not None, f"mimo_fast._C_cuda did not import: {_ext.C_CUDA_REASON}"
print("_C_cuda build:", dict(_ext.C_CUDA.build_info))
for name in ("cuda", "triton", "cpu"):
    print(f"backend {name}:", registry.get_backend(name).unavailable() or "available")
EOF
  ok=${PIPESTATUS[0]}; "$PY" -c "from mimo_fast.cli import main; main([\"info\"])" >> "$WORK/env.txt" 2>&1; exit $ok'

# validate (estimate 110 s): the last run's whole suite took 167 s at -n 8 (854 tests);
# these files are most of its GPU cases, now with the MPNN's relu samples (x2) and the cuda
# backend, at -n 12. The tests/gpu checks (guess: under a minute each: they were the
# gpu_check_*.py scripts, whose MPNN part said "a minute or two" with its timing, now gone)
# run beside it in two pytest processes, each limited to 150 s: correctness only, so sharing
# the GPU does not matter.
TEST_FILES=$(cd tests && ls test_mpnn_message_sum*.py test_ep_lmmse*.py test_amp_step*.py test_registry.py \
  test_validate.py test_triton_launch.py 2>/dev/null | grep -v -e '_cpu\.py$' -e '_emulation\.py$' | tr '\n' ' ')
TEST_K=${TEST_K:-"cuda or triton or registry or validate or launch"}
export TEST_FILES TEST_K
VALIDATE_CMD='sub() { printf "%s\t%s\t%s\t-\t-\t%s\n" "$1" "$2" "$3" "$(tr "\t" " " <<< "$4")" >> "$WORK/sub.tsv"; }
  check() {   # check NAME FILES: pytest -m gpu FILES (in tests/gpu/), its own time limit, one sub-line
    local s=$(date +%s) r
    (cd tests/gpu && timeout -k 5 150 "$PYTEST" -v -p no:cacheprovider -m gpu --timeout 100 -rfE $2) \
      > "$WORK/check_$1.log" 2>&1; r=$?
    sub "  tests/gpu $1" "$r" "$(( $(date +%s) - s ))" "$(grep -v "^[[:space:]]*$" "$WORK/check_$1.log" | tail -1)"
    return $r
  }
  check ep_amp "test_gpu_ep_lmmse.py test_gpu_amp_step.py" & p1=$!
  check mpnn test_gpu_mpnn_message_sum.py & p2=$!
  s=$(date +%s)
  (cd tests && "$PYTEST" -v -p no:cacheprovider -n "$XDIST_N" --timeout 120 -rfE --durations 15 \
      --junitxml "$WORK/tests.xml" -k "$TEST_K" $TEST_FILES > "$OUT/tests.log" 2>&1)
  r0=$?; sub "  pytest (op tests)" "$r0" "$(( $(date +%s) - s ))" "-n $XDIST_N, -k \"$TEST_K\": $(tail -1 "$OUT/tests.log")"
  tail -30 "$OUT/tests.log"
  wait $p1; r1=$?; wait $p2; r2=$?
  echo "tests/gpu ep_amp: exit $r1; tests/gpu mpnn: exit $r2"
  exit $(( r0 || r1 || r2 ))'

# bench (estimate 45 s, a guess: the last run did not log it): 90 cases of 13 calls of at
# most ~10 ms, so mostly Triton's first compiles at these shapes (2-5 s per kernel) and
# pytest; peaks (1 GiB copy, 8192^3 matmul) ~3 s. S2 is cut (shapes, not checks).
BENCH_SHAPES=${BENCH_SHAPES:-S1,S1-relu,S3,B4096-K16,B1024-K64,B16-1024x1024,B256-64x64}
export MIMO_FAST_GPU_BENCH_SHAPES=$BENCH_SHAPES
BENCH_CMD='for sel in "not compiled and not cuda" "cuda and not compiled"; do
    echo "== pytest bench/bench_gpu.py -k \"$sel\" ($(date -u +%T))" >> "$OUT/bench.log"
    "$PYTEST" -q -p no:cacheprovider bench/bench_gpu.py --benchmark-only --timeout 60 -rfE -k "$sel" \
      --benchmark-json "$WORK/bench_${sel// /_}.json" >> "$OUT/bench.log" 2>&1 || r=$?
  done; tail -5 "$OUT/bench.log"; exit ${r:-0}'

# compiled (estimate 70 s, a guess: never run on the GPU before): max-autotune compiles and
# times GEMM templates, ~15-30 s per graph on a bare machine; four forward graphs, the MPNN
# target first (80 s per-case limit: a stuck compile loses only its case).
COMPILED_CMD='echo "== pytest bench/bench_gpu.py -k compiled ($(date -u +%T))" >> "$OUT/bench.log"
  "$PYTEST" -q -p no:cacheprovider bench/bench_gpu.py --benchmark-only --timeout 80 -rfE -k compiled \
    --benchmark-json "$WORK/bench_compiled.json" >> "$OUT/bench.log" 2>&1; r=$?; tail -5 "$OUT/bench.log"; exit $r'

# overhead (estimate 20 s, a guess): 4 small shapes x 2 backends x 6 variants of 255 calls
# (< 0.3 ms each), Triton's compiles at the small shapes (mostly cached by the tests), and
# the breakdown at 4 shapes (36 calls + a profile each).
OVERHEAD_CMD='echo "== tools/gpu_profile.py --overhead ($(date -u +%T))" >> "$OUT/bench.log"
  "$PY" tools/gpu_profile.py --overhead --backends triton cuda --shapes S1,S1-relu,B4096-K16,B16-1024x1024 \
    --json "$WORK/overhead.json" >> "$OUT/bench.log" 2>&1; r=$?
  grep "^| " "$OUT/bench.log" | tail -60; exit $r'

stamp "mimo_fast GPU session: phases $PHASES, budget ${BUDGET_S}s, OUT=$OUT, work files in $WORK"
stamp "op tests (in tests/): $TEST_FILES-k \"$TEST_K\"; bench shapes: $BENCH_SHAPES"
phase env "$ENV_CMD"
if phase build "$BUILD_CMD"; then
  phase validate "$VALIDATE_CMD"
  phase bench "$BENCH_CMD"
  phase compiled "$COMPILED_CMD"
  phase overhead "$OVERHEAD_CMD"
else
  stamp "build failed: nothing else can run (see build.log)"
  for p in validate bench compiled overhead; do
    printf '%s\tskip\t0\t-\t-\tbuild failed\n' "$p" >> "$WORK/phases.tsv"
  done
fi

# ---------------------------------------------------------------- report (always)
stamp "report"
elapsed=$(( $(date +%s) - start ))
for c in ep_amp mpnn; do
  [[ -f $WORK/check_$c.log ]] && { echo "===== tests/gpu $c (pytest -m gpu)"; cat "$WORK/check_$c.log"; echo; }
done > "$OUT/checks.log"
[[ -s $OUT/checks.log ]] || rm -f "$OUT/checks.log"
timeout -k 2 "$((REPORT_S - 3))" "$PY" bench/report.py gpu "$WORK"/bench_*.json "$WORK/bench.jsonl" \
  --phases "$WORK/phases.tsv" --junit "$WORK/tests.xml" --tests-log "$OUT/tests.log" --overhead "$WORK/overhead.json" --env "$WORK/env.txt" \
  --total-s "$elapsed" --md "$OUT/summary.md" --json "$OUT/summary.json" --merged "$OUT/gpu.json" \
  || { echo "bench/report.py gpu failed"; FAILED+=" report"; }
tar czf "$OUT/extra.tar.gz" -C "$WORK" . 2>/dev/null
[[ -f $OUT/summary.md ]] && sed -n '1,/^## Benchmark/p' "$OUT/summary.md" | head -150
stamp "done in ${elapsed}s (+report); failed phases:${FAILED:- none}; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$WORK"
[[ -z $FAILED ]]
