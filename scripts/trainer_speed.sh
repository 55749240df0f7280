#!/usr/bin/env bash
# Training speed as a run sees it (docs/results.md): 100 steps of 64 patches in the trainer, on
# THREADS threads, patches/s at step 100. Rounds interleave the trainer of BASE (default
# 9e1995d, the trainer issue 11 measured; checked out in a temporary git worktree) on the issue's
# configuration with this trainer on it and on the shipped recipe, in 1 and 2 processes.
# Run it on a quiet machine: everything else on the cores shows in the figures.
#
#   bash scripts/trainer_speed.sh [ROUNDS] [BASE]
#
# DATA (../shared/data), CACHE (runs/cache), THREADS (2), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD
PY=$(realpath -s "${PYTHON:-.venv/bin/python}")  # -s: a venv's python is a symlink to keep
DATA=$(realpath "${DATA:-../shared/data}")
CACHE=$(realpath -m "${CACHE:-runs/cache}")
THREADS=${THREADS:-2}
ROUNDS=${1:-2}
BASE=${2:-9e1995d}
TMP=$(mktemp -d)
trap 'git -C "$HERE" worktree remove --force "$TMP/base" >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
git worktree add --detach "$TMP/base" "$BASE" >/dev/null 2>&1
COMMON=(--width 0.5 --epochs 1 --max-steps-per-epoch 100 --train-size 6400 --threads "$THREADS"
    --data "$DATA/pcam/pcam_train_valid.zip" --cache-dir "$CACHE")
ISSUE=(--group C8)
SHIPPED=(--group C4 --antialias --recipe robust --weight-decay 0.05)

speed() {  # LABEL FOLDER ARGS...: one 100-step run, its patches/s
    local label=$1 folder=$2
    shift 2
    rm -rf "$TMP/run"
    (cd "$folder" && "$PY" -m training train "$@" --out "$TMP/run" >"$TMP/log" 2>&1) || true
    local rate
    rate=$(sed -n 's/.*step 100\/100 .*, \([0-9.]*\) patches\/s/\1/p' "$TMP/log")
    if [ -n "$rate" ]; then
        printf '%-56s %s patches/s\n' "$label" "$rate"
    else
        printf '%-56s failed: %s\n' "$label" "$(tail -n 1 "$TMP/log")"
    fi
}

for round in $(seq "$ROUNDS"); do
    echo "round $round"
    speed "C8 plain, trainer at $BASE" "$TMP/base" "${ISSUE[@]}" "${COMMON[@]}"
    for processes in 1 2; do
        speed "C8 plain, this trainer, $processes process(es)" "$HERE" "${ISSUE[@]}" "${COMMON[@]}" \
            --processes "$processes"
        speed "C4 robust (shipped), this trainer, $processes process(es)" "$HERE" "${SHIPPED[@]}" \
            "${COMMON[@]}" --processes "$processes"
    done
done
