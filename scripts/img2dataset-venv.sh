#!/usr/bin/env bash
# Build .cache/img2dataset-venv: img2dataset, which tests/serving/test_shards_tools.py runs to write
# webdataset shards as users get them.  Idempotent: a second run only checks.
#
# A venv of its own because img2dataset pins what the dev venv must not take: webdataset<0.3,
# pandas<3, albumentations<2 (with opencv), wandb.  The test runs its command-line tool only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.cache/img2dataset-venv
STAMP=$VENV/.clip-onnx-img2dataset-v1

if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p .cache
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$0" -nt "$STAMP" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q img2dataset==1.47.0
  NO_ALBUMENTATIONS_UPDATE=1 "$VENV/bin/python" -c "import img2dataset"
  touch "$STAMP"
fi
