#!/usr/bin/env bash
# A GPU machine's validation run, in one command (the GPU is lent briefly; see README):
# build with CUDA, report the build, run the test suite on the GPU (the generic op tests
# add CUDA copies of every sample, so triton, cuda and reference run on the GPU), then the
# GPU benchmark. Logs go to $OUT (default /tmp/mimo-fast-gpu).
#
#   bash bench/gpu_session.sh [tests|bench|all] [extra pytest args for the benchmark]
#
# Uses the python3 on PATH, which must already hold torch with CUDA, triton, pytest,
# pytest-benchmark, hypothesis, scikit-build-core and pybind11 (the device image does).
set -uo pipefail
what=${1:-all}; shift || true
OUT=${OUT:-/tmp/mimo-fast-gpu}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
BIN=$(dirname "$(command -v "$PY")")   # the venv's bin (no readlink: its python3 links out of it)
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s] $*"; }

stamp "build"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -m pip install --no-build-isolation --no-deps -v . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
"$BIN/mimo-fast" info | tee "$OUT/info.txt"
rc=0
if [[ $what == tests || $what == all ]]; then
  stamp "tests"
  (cd tests && "$BIN/pytest" -q -p no:cacheprovider -n 8 --timeout 300 -rfE --junitxml "$OUT/tests.xml" \
      > "$OUT/tests.log" 2>&1); rc=$?
  tail -40 "$OUT/tests.log"
fi
if [[ $what == bench || $what == all ]]; then
  stamp "bench"
  "$BIN/pytest" -q -p no:cacheprovider bench/bench_gpu.py --benchmark-only \
      --benchmark-json "$OUT/gpu.json" "$@" > "$OUT/bench.log" 2>&1 || rc=$?
  tail -15 "$OUT/bench.log"
  "$PY" bench/report_gpu.py "$OUT/gpu.json" > "$OUT/gpu.md" 2>&1 || true
fi
stamp "done rc=$rc"
exit $rc
