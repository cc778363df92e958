#!/usr/bin/env bash
# The prepared training command for a lent GPU machine (issue 17): one run of a published
# recipe at a large batch on the triton backend, stopped with SIGINT (a checkpoint) before
# BUDGET_S seconds are up, its run folder brought back through $OUT.
#
#   bash experiments/gpu_training/run.sh gepnet|gnn [RESUME_DIR]
#
# gepnet: the gepnet-published recipe (P(Nt) ∝ Nt over {4, 8}, float64, final-iteration loss)
#         at BATCH 1024 (default), lr 1e-3 x sqrt(BATCH / 128) (Adam's square-root rule; the
#         recipe's 128 is too small to fill a GPU), validation every ~100,000 samples and the
#         plateau scheduler every 50 of them, as the recipe's epochs.
# gnn:    the gnn-published recipe (64x32, a fixed set of 300,000 samples, weight decay 1e-5)
#         at BATCH 512, lr 1e-4 x sqrt(BATCH / 64), validation once per pass over the set.
# RESUME_DIR: a run folder from an earlier session (e.g. unpacked from its run.tar.gz); the
#         run continues from it with --resume (the same options are required).
#
# Files in $OUT (default /tmp/mimo-fast-train): env.txt, build.log, train.log, run.tar.gz
# (last/best weights, last.state.pt, log.jsonl, snapshots every KEEP steps). Verify the
# weights on this side with `mimo-fast simulate --detector gepnet --weights ...`.
# Environment: PYTHON (python3), BUDGET_S (540), BATCH, LR, KEEP, DEVICE (cuda),
# BACKEND (triton), SKIP_INSTALL=1 (the package is already installed; for a dry run on a
# CPU: DEVICE=cpu BACKEND=cpu SKIP_INSTALL=1 BUDGET_S=60 BATCH=16).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
MODEL=${1:-gepnet}
RESUME_DIR=${2:-}
OUT=${OUT:-/tmp/mimo-fast-train}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-540}
DEVICE=${DEVICE:-cuda}
BACKEND=${BACKEND:-triton}
start=$(date +%s)
mkdir -p "$OUT"

{ date -u; git rev-parse HEAD 2>/dev/null; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  "$PY" -c "import triton; print('triton', triton.__version__)" 2>/dev/null; } > "$OUT/env.txt" 2>&1

if [ "${SKIP_INSTALL:-0}" != 1 ]; then   # the CPU extension only: the triton backend needs no CUDA build
  "$PY" -m pip install --no-build-isolation -e . > "$OUT/build.log" 2>&1 || { echo "install failed: $OUT/build.log"; exit 1; }
fi

lr_for() { "$PY" -c "import math,sys; print(f'{$1 * math.sqrt($2 / $3):.3g}')"; }
case $MODEL in
  gepnet)
    BATCH=${BATCH:-1024}; LR=${LR:-$(lr_for 1e-3 "$BATCH" 128)}
    EVERY=$(( (100000 + BATCH - 1) / BATCH ))
    STEPS=$(( 47000000 / BATCH ))
    ARGS=(gepnet --preset published --seed 1 --val-every "$EVERY" --steps "$STEPS") ;;
  gnn)
    BATCH=${BATCH:-512}; LR=${LR:-$(lr_for 1e-4 "$BATCH" 64)}
    EVERY=$(( (300000 + BATCH - 1) / BATCH ))
    STEPS=$(( EVERY * 500 ))
    ARGS=(gnn --preset published --seed 1 --val-every "$EVERY" --steps "$STEPS") ;;
  *) echo "usage: $0 gepnet|gnn [RESUME_DIR]" >&2; exit 2 ;;
esac
KEEP=${KEEP:-$EVERY}
RUN="$OUT/run"
if [ -n "$RESUME_DIR" ]; then
  [ -f "$RESUME_DIR/last.state.pt" ] || { echo "$RESUME_DIR: no last.state.pt to resume" >&2; exit 2; }
  if [ "$(realpath "$RESUME_DIR")" != "$(realpath -m "$RUN")" ]; then rm -rf "$RUN"; cp -r "$RESUME_DIR" "$RUN"; fi
  ARGS+=(--resume)
fi

left=$(( BUDGET_S - ($(date +%s) - start) - 40 ))   # 40 s: the checkpoint after SIGINT and the tar
echo "train $MODEL: batch $BATCH lr $LR, validation every $EVERY steps, $left s" | tee "$OUT/train.log"
timeout -s INT -k 30 "$left" "$PY" -m mimo_fast.cli train "${ARGS[@]}" --batch "$BATCH" --lr "$LR" \
    --keep-every "$KEEP" --device "$DEVICE" --backend "$BACKEND" --out "$RUN" --no-progress >> "$OUT/train.log" 2>&1
rc=$?
echo "exit $rc after $(( $(date +%s) - start )) s" >> "$OUT/train.log"
tar czf "$OUT/run.tar.gz" -C "$OUT" run
tail -3 "$OUT/train.log"
