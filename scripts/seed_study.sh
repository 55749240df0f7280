#!/usr/bin/env bash
# The data-efficiency seed study (docs/results.md): train, quantize and evaluate each listed run in
# turn, one thread, bfloat16 autocast, the robust anti-aliased recipe at width 0.5 unless a run's
# arguments say otherwise. Re-runnable:
# a run resumes from its folder, and a run with eval/metrics.json is skipped.
#
#   bash scripts/seed_study.sh SIZE EPOCHS NAME:"TRAIN ARGS" [NAME:"TRAIN ARGS" ...]
#   bash scripts/seed_study.sh 5000 12 d5k-c8-aa-s2:"--group C8 --seed 2" d5k-conv-aa-s3:"--arch conventional --seed 3"
#
# RUNS (default ~/.cache/equitriage/runs), DATA (../shared/data), CACHE (runs/cache), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-$HOME/.cache/equitriage/runs}
DATA=${DATA:-../shared/data}
CACHE=${CACHE:-runs/cache}
SIZE=$1
EPOCHS=$2
shift 2
D=(--data "$DATA/pcam/pcam_train_valid.zip" --cache-dir "$CACHE")
for spec in "$@"; do
  name=${spec%%:*}
  read -r -a args <<< "${spec#*:}"
  out=$RUNS/$name
  [ -f "$out/eval/metrics.json" ] && continue
  # the study's defaults first: a run's own arguments (e.g. --width 0.75 --expansion 2) win
  $PY -m training train --width 0.5 --antialias --recipe robust --weight-decay 0.05 "${args[@]}" \
    --train-size "$SIZE" --epochs "$EPOCHS" --threads 1 --bf16 --out "$out" --resume "${D[@]}"
  $PY -m training quantize "$out/best.pt" --bias-correction --out "$out/int8.onnx" "${D[@]}"
  $PY -m training evaluate "$out/int8.onnx" "${D[@]}" --curve-patches 0 --n-boot 200 --out-dir "$out/eval"
done
