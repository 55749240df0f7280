#!/usr/bin/env bash
# Reproduce the generated tables and plots of docs/results.md: 16 training runs, the quantization
# study, the speed benchmarks, then the tables and plots. CPU only; about 5 hours on 2 cores. (The
# robust-recipe sections, the converged seed studies and the long runs give their own commands.)
#
#   bash scripts/results.sh            # needs the training extra: pip install -e ".[train]"
#
# Training runs go in two lanes of one thread each (faster on 2 cores than one run on two threads).
# Each run is skipped once finished, so the script resumes after a stop. Every run sees the same
# number of patches (40,000: 2 epochs of 20k, 8 of 5k, 20 of 2k), so the data-efficiency runs
# differ in data, not in compute.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs/table}
STUDY=${STUDY:-runs/study}
mkdir -p "$RUNS"

lane() {  # DIR, then lines of "NAME ARGS..." on stdin, run one after the other
    local dir=$1
    mkdir -p "$dir"
    while read -r name args; do
        [ -f "$dir/$name/best.pt" ] && [ -f "$dir/$name/done" ] && continue
        # shellcheck disable=SC2086
        $PY -m training train --threads 1 --out "$dir/$name" $args > "$dir/$name.log" 2>&1
        touch "$dir/$name/done"
    done
}

lane "$RUNS" <<'EOF' &
eq-s0 --arch equivariant --group C8 --seed 0 --epochs 2
eq-s1 --arch equivariant --group C8 --seed 1 --epochs 2
eq-s2 --arch equivariant --group C8 --seed 2 --epochs 2
conv-n5k --arch conventional --seed 0 --epochs 8 --train-size 5000
EOF
lane "$RUNS" <<'EOF' &
conv-s0 --arch conventional --seed 0 --epochs 2
conv-s1 --arch conventional --seed 1 --epochs 2
conv-s2 --arch conventional --seed 2 --epochs 2
conv-n2k --arch conventional --seed 0 --epochs 20 --train-size 2000
eq-n2k --arch equivariant --group C8 --seed 0 --epochs 20 --train-size 2000
eq-n5k --arch equivariant --group C8 --seed 0 --epochs 8 --train-size 5000
EOF
wait

# Every quantization variant of the full-data runs; FP32 and the shipped INT8 recipe of the others.
$PY -m training study "$RUNS"/eq-s? "$RUNS"/conv-s? --out "$STUDY"
$PY -m training study "$RUNS"/*-n?k --out "$STUDY" --variants fp32,int8-dfq-bc --curve-patches 0

# Speed and size, all four models side by side in one process.
$PY benchmarks/model_speed.py "$STUDY"/conv-s0/fp32.onnx "$STUDY"/conv-s0/int8-dfq-bc.onnx \
    "$STUDY"/eq-s0/fp32.onnx "$STUDY"/eq-s0/int8-dfq-bc.onnx --threads 2 --repeats 30 \
    --json "$STUDY"/speed.json

# The recipe comparison: seed 1 of the table against wider nets, colour jitter and 4x the epochs.
RECIPE=${RECIPE:-runs/recipe}
lane "$RECIPE" <<'EOF' &
eq-w0.75 --arch equivariant --group C8 --seed 1 --epochs 2 --width 0.75
eq-j1 --arch equivariant --group C8 --seed 1 --epochs 2 --jitter 1
eq-j2 --arch equivariant --group C8 --seed 1 --epochs 2 --jitter 2
conv-e8 --arch conventional --seed 1 --epochs 8
EOF
lane "$RECIPE" <<'EOF' &
eq-w1.0 --arch equivariant --group C8 --seed 1 --epochs 2 --width 1.0
eq-e8 --arch equivariant --group C8 --seed 1 --epochs 8
EOF
wait
$PY -m training study "$RUNS"/eq-s1 "$RUNS"/conv-s1 "$RECIPE"/*/ --out "$STUDY"-recipe \
    --variants fp32,int8-dfq-bc --curve-patches 0
$PY benchmarks/model_speed.py "$STUDY"-recipe/*/int8-dfq-bc.onnx --threads 2 --repeats 30 \
    --json "$STUDY"-recipe/speed.json

$PY -m training results "$STUDY" --speed "$STUDY"/speed.json --doc docs/results.md --figures docs/results \
    --recipe "$STUDY"-recipe "$STUDY"-recipe/speed.json
