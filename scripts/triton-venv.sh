#!/usr/bin/env bash
# Build .venv-triton: the server side of the Triton tests.  Idempotent: a second run only checks.
#
# The PyPI wheel nvidia-pytriton ships a real tritonserver (2.51) with the Python
# backend.  Its Python-backend stub runs in whatever `python3` comes first on PATH
# and crashes on string tensors under numpy 2, so the server gets its own venv with
# numpy<2 and clip-onnx installed runtime-only (no torch): what a Triton container
# with `pip install clip-onnx` would have.  The test venv (.venv) stays on numpy 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-triton
STAMP=$VENV/.clip-onnx-triton-v1

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ setup.cfg -nt "$STAMP" ] || [ "$0" -nt "$STAMP" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q nvidia-pytriton==0.7.0 "numpy<2" onnxruntime pillow click tqdm
  # Runtime-only: --no-deps keeps the export extras (torch, onnx) out of the server's Python.
  "$VENV/bin/pip" install -q --no-deps -e .
  "$VENV/bin/python" -c "import clip_onnx.runtime, numpy; assert numpy.__version__ < '2', numpy.__version__"
  touch "$STAMP"
fi
