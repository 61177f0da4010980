#!/usr/bin/env bash
# The CPU benchmark quoted in the README: ruclip-vit-base-patch32-384 with random
# weights (no download), every CPU backend side by side, written to benchmarks/results/.
# Run on a quiet machine: other processes skew every backend (interleaving only
# spreads the drift evenly, it does not remove it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/dev-setup.sh
exec .venv/bin/clip-onnx bench ruclip-vit-base-patch32-384 --random-weights \
  --backends torch,torch-fp16,onnxruntime,onnxruntime-int8,tensorrt \
  --batch 1,8,32 --warmup 3 --repeat "${REPEAT:-10}" --out benchmarks/results/ruclip-b32-384-cpu "$@"
