#!/usr/bin/env bash
# The runtime-only install, in two steps:
#  1. `pip install clip-onnx` with no extras is enough for a worker: a fresh venv gets the package
#     alone, embeds and classifies with a bundle the dev venv exported, and has neither torch, onnx
#     nor youtokentome installed, let alone imported;
#  2. the runtime tier of the suite (tests/runtime) passes in that venv, with the test tools and the
#     `data` extra added (pytest, hypothesis, faker, pyarrow: still no torch), against bundles the
#     dev venv exported once (tests/bundles.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

no_heavy() {
  for heavy in torch onnx youtokentome transformers tokenizers open_clip; do
    if "$work/venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$heavy') is None)"; then
      echo "runtime-only install ($1) pulled in $heavy" >&2
      exit 1
    fi
  done
}

.venv/bin/python -m tests.bundles "$work/bundles" >"$work/bundles.log" 2>&1 || { cat "$work/bundles.log" >&2; exit 1; }
"$PY" -m venv "$work/venv"
{ "$work/venv/bin/pip" install -q --upgrade pip && "$work/venv/bin/pip" install -q .; } >"$work/pip.log" 2>&1 \
  || { cat "$work/pip.log" >&2; exit 1; }
no_heavy "no extras"

"$work/venv/bin/python" - "$work/bundles/demo" <<'PYEOF'
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
PYEOF
"$work/venv/bin/clip-onnx" embed "$work/bundles/demo" --text "синий круг" -o "$work/out.npy" >/dev/null 2>&1
echo "runtime-only install: clip-onnx embed wrote $(stat -c %s "$work/out.npy") bytes"

"$work/venv/bin/pip" install -q ".[test,data]" >"$work/pip.log" 2>&1 || { cat "$work/pip.log" >&2; exit 1; }
no_heavy "with the test tools"
echo "runtime tier (tests/runtime) under the runtime-only install:"
# Always under the skip rule (tests/skip_rule.py), CI or not: this run exists to show the whole tier runs
# without torch, so a test that skips here (an import the tier must not need) fails it. Nothing in the tier is
# left out of this install; a test that needs an export library belongs in tests/export.
CI=1 CLIP_ONNX_TEST_BUNDLES="$work/bundles" "$work/venv/bin/python" -m pytest -q -p no:cacheprovider tests/runtime
