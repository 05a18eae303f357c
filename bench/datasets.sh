#!/usr/bin/env bash
# Issue 13, acceptance #1 as a benchmark: the reference recipe on Fashion-MNIST, 3000 CPU steps,
# seed 0, in a store of its own. The set's judge is trained first when the store has none
# (3 epochs over the 60,000 training images), then the GAN trains, exports, is judged and
# registered. Prints the pipeline's summary (label accuracy, class KL, FCD and its real
# train-vs-test baseline) and the per-class accuracy.
#   bench/datasets.sh [DATASET] [extra train flags...]     e.g. bench/datasets.sh emnist-letters --no-conditional
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:-fashion-mnist}; shift || true
out=$(realpath -m "${BENCH_OUT:-var/bench-datasets}")
mkdir -p "$out"
export BENTOML_HOME=${BENTOML_HOME:-$out/bentoml} GANFORGE_RUNS_DIR=$out/runs
export GANFORGE_DATA_DIR=${GANFORGE_DATA_DIR:-$PWD/data} GANFORGE_DOWNLOAD=${GANFORGE_DOWNLOAD:-0}
start=$(date +%s)
.venv/bin/ganforge train --dataset "$dataset" --family dcgan --conditional --steps 3000 --device cpu \
    --seed 0 --no-progress "$@" | tee "$out/$dataset.txt"
echo "wall seconds (judge + train + export + evaluation): $(( $(date +%s) - start ))" | tee -a "$out/$dataset.txt"
tag=$(awk '/^registered/ {print $2; exit}' "$out/$dataset.txt")
.venv/bin/ganforge evaluate "$tag" | tee -a "$out/$dataset.txt"
