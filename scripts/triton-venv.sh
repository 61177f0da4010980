#!/usr/bin/env bash
# Build .venv-triton: the server side of the Triton tests, and where `clip-onnx serve` runs in them.
# Idempotent: a second run only checks.
#
# The PyPI wheel nvidia-pytriton ships a real tritonserver (2.51) with the Python
# backend.  Its Python-backend stub runs in whatever `python3` comes first on PATH,
# ignores PYTHONPATH, and crashes on string tensors under numpy 2, so the server gets
# its own venv: `pip install -e ".[serve]"`, exactly what a user installs for
# `clip-onnx serve` (numpy<2, runtime only, no torch).  The test venv (.venv) stays on numpy 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-triton
STAMP=$VENV/.clip-onnx-triton-v2

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ setup.cfg -nt "$STAMP" ] || [ "$0" -nt "$STAMP" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  # The runtime and the [serve] extra only: the export extras (torch, onnx) stay out of the server's Python.
  "$VENV/bin/pip" install -q -e ".[serve]"
  "$VENV/bin/python" -c "import clip_onnx.runtime, numpy; assert numpy.__version__ < '2', numpy.__version__"
  touch "$STAMP"
fi
