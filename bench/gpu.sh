#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): plan and train on CUDA with bf16 and channels_last,
# resume and determinism, then the 224 px throughput table (ours against a tutorial-style
# loop, GPU busy time) for ResNet-18 and MobileNetV2. Needs PyTorch and torchvision, no
# DVC, no network; under 8 minutes on one H200. Anywhere: bash bench/gpu.sh --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
