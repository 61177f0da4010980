#!/usr/bin/env bash
# Proves that `pip install clip-onnx` with no extras is enough for a worker: a fresh venv gets the
# package alone, then embeds and classifies with a bundle that the dev venv exported, and must not
# have torch, onnx or youtokentome installed, let alone imported.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

.venv/bin/clip-onnx export ruclip-demo -o "$work/bundle" >/dev/null 2>&1
"$PY" -m venv "$work/venv"
{ "$work/venv/bin/pip" install -q --upgrade pip && "$work/venv/bin/pip" install -q .; } >"$work/pip.log" 2>&1 \
  || { cat "$work/pip.log" >&2; exit 1; }

for heavy in torch onnx youtokentome; do
  if "$work/venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$heavy') is None)"; then
    echo "runtime-only install pulled in $heavy" >&2
    exit 1
  fi
done

"$work/venv/bin/python" - "$work/bundle" <<'EOF'
import sys

import numpy as np
from PIL import Image

from clip_onnx.runtime import ClipModel

model = ClipModel.load(sys.argv[1])
red = Image.new("RGB", (96, 96), (220, 30, 30))
probs = model.classify([red], ["красный", "синий", "зелёный"], templates=["{} цвет"]).probs
text = model.encode_text(["красная звезда"])
assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5), "text embedding is not normalised"
assert probs.argmax() == 0, f"a red square classified as {probs}"
heavy = [m for m in ("torch", "onnx", "youtokentome") if m in sys.modules]
assert not heavy, f"runtime imported {heavy}"
print(f"runtime-only install: classify and embed ran without torch (p(красный) = {probs[0, 0]:.3f})")
EOF
"$work/venv/bin/clip-onnx" embed "$work/bundle" --text "синий круг" -o "$work/out.npy" >/dev/null 2>&1
echo "runtime-only install: clip-onnx embed wrote $(stat -c %s "$work/out.npy") bytes"
