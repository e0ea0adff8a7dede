#!/usr/bin/env bash
# Issue 13's GPU figures in one short run (docs/performance.md, "GPU"): inference and training
# images/s of the paper preset's Wide-ResNet50-2 at 256 px, bf16, channels_last, random weights,
# and ResNet-18 beside it, then the training speed of each stage of the paper preset.
# Needs only torch, timm and siamese-ad's dependencies (no anomalib: the H200 targets are
# absolute, 2000 inference and 400 training images/s), about 5 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh "$OUT"                     # on the GPU machine
#   DEVICE=cpu QUICK=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh /tmp/g  # CPU smoke test
# (PYTHON: the interpreter with torch and timm; default python3)
set -euo pipefail
out=${1:-runs/gpu}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
{
    nvidia-smi || true
    "$py" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__,
               'cuda', torch.cuda.is_available())"
} > "$out/machine.txt" 2>&1
if [[ -n ${QUICK:-} ]]; then
    speed=(--quick)
    train=(--quick --device "$device")
else
    # batch 256 for inference and 64 for training: batch 16 leaves an H200 mostly idle
    speed=(--backbones wide_resnet50_2 resnet18 --batch-size 256 --train-batch 64 --repeats 10
        --warmup 3)
    train=(--presets paper --n-train 512 --epochs 3 --deviation-epochs 2 --device "$device"
        --extra-args "--train.batch_size 64 --bf16")
fi
"$py" benchmarks/speed.py --device "$device" --precision bf16 --no-anomalib --no-memory \
    "${speed[@]}" --out "$out/speed.json" 2>&1 | tee "$out/speed.log"
"$py" benchmarks/train_speed.py "${train[@]}" --out "$out/train_speed.json" 2>&1 \
    | tee "$out/train_speed.log"
