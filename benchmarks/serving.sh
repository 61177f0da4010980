#!/usr/bin/env bash
# The serving figures of benchmarks/NOTES.md ("serving") and docs/serving.md, one stage per argument:
#   layouts  demo bundle, c1 and c8: the old ensemble, the new ensemble (both on the test stand-in for the
#            ONNX Runtime backend), PyTriton and the python layout (`clip-onnx serve`), all 1 ONNX Runtime thread
#   demo     demo bundle: serve's defaults (1 instance x 2 threads) and 2 instances x 1 thread, c1/c8/c32
#   int8     BUNDLE_INT8 (ruclip-vit-base-patch32-384 int8): serve's defaults, c1/c8/c32
#   soak     demo bundle: 8 clients, every 20th request an undecodable image, SOAK_SECONDS (60), memory sampled
#   openai   the OpenAI-compatible API beside Triton's HTTP, c1/c8: BUNDLE_INT8, then the demo bundle
# Each row runs beside its in-process baseline in the same `clip-onnx serve-bench` run, and waits for
# other processes to quiet down first (the other-load column says how well that went).
#
# SERVER_PYTHON: a Python with `pip install 'clip-onnx[serve]'` (numpy<2); default .venv-triton's.
# OLD_SERVER_PYTHON: the same for the clip-onnx whose ensemble layout is the "before" row (layouts only).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/$(date +%F)-serving}
SERVER_PYTHON=${SERVER_PYTHON:-$PWD/.venv-triton/bin/python}
DEMO=${DEMO:-/tmp/serve-bundles/demo}
BUNDLE_INT8=${BUNDLE_INT8:-/work/bundles/ruclip-b32-384-int8}
PY=.venv/bin/python
BENCH=("$PY" -m clip_onnx.cli serve-bench --quiet-cores 0.3 --python "$SERVER_PYTHON")
mkdir -p "$OUT"
# A stage that fails leaves no server behind.
trap 'jobs -p | xargs -r kill -TERM 2>/dev/null || true' EXIT
[ -d "$DEMO" ] || .venv/bin/clip-onnx export ruclip-demo -o "$DEMO"

wait_ready() {  # log file, pattern
  for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.5; done
  echo "not ready: $1" >&2; tail -20 "$1" >&2; return 1
}

layouts() {
  local repo=$OUT/repositories
  rm -rf "$repo"
  if [ -n "${OLD_SERVER_PYTHON:-}" ]; then
    # The before row: the old clip-onnx writes its own repository (three Python steps, 2 ms batching delays).
    env -u PYTHONPATH "$(dirname "$OLD_SERVER_PYTHON")/clip-onnx" triton "$DEMO" -o "$repo/old" --name demo >/dev/null
    "$PY" benchmarks/serve_repository.py "$repo/old" --python "$OLD_SERVER_PYTHON" --http-port 18200 \
      --grpc-port 18201 --metrics-port 18202 >"$OUT/old.log" 2>&1 &
    local old=$!
    wait_ready "$OUT/old.log" "^serving"
    "${BENCH[@]}" "$DEMO" --url 127.0.0.1:18200 --name demo --threads 1 --concurrency 1,8 --seconds 8 \
      --out "$OUT/layout-old-ensemble" || true
    kill -TERM $old; wait $old || true
  fi
  "$PY" -m clip_onnx.cli triton "$DEMO" -o "$repo/new" --name demo >/dev/null
  "$PY" benchmarks/serve_repository.py "$repo/new" --python "$SERVER_PYTHON" --http-port 18210 \
    --grpc-port 18211 --metrics-port 18212 >"$OUT/new.log" 2>&1 &
  local new=$!
  wait_ready "$OUT/new.log" "^serving"
  "${BENCH[@]}" "$DEMO" --url 127.0.0.1:18210 --name demo --threads 1 --concurrency 1,8 --seconds 8 \
    --out "$OUT/layout-new-ensemble"
  kill -TERM $new; wait $new || true
  LD_LIBRARY_PATH=$("$SERVER_PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))') \
    "$SERVER_PYTHON" benchmarks/serve_pytriton.py "$DEMO" --name demo --threads 1 --http-port 18220 \
    --grpc-port 18221 --metrics-port 18222 >"$OUT/pytriton.log" 2>&1 &
  local pyt=$!
  wait_ready "$OUT/pytriton.log" "PyTriton serving"
  for model in demo_image demo_text; do  # PyTriton announces before its models are READY
    until curl -sf "127.0.0.1:18220/v2/models/$model/ready"; do sleep 0.5; done
  done
  "${BENCH[@]}" "$DEMO" --url 127.0.0.1:18220 --name demo --threads 1 --concurrency 1,8 --seconds 8 \
    --out "$OUT/layout-pytriton"
  kill -TERM $pyt; wait $pyt || true
  "${BENCH[@]}" "$DEMO" --name demo --threads 1 --server-threads 1 --concurrency 1,8 --seconds 8 \
    --out "$OUT/layout-python"
}

demo() {
  "${BENCH[@]}" "$DEMO" --name demo --threads 2 --concurrency 1,8,32 --protocols http,grpc --seconds 10 \
    --out "$OUT/demo-1x2"
  "${BENCH[@]}" "$DEMO" --name demo --threads 1 --server-instances 2 --server-threads 1 --concurrency 1,8,32 \
    --seconds 10 --out "$OUT/demo-2x1"
}

int8() {
  "${BENCH[@]}" "$BUNDLE_INT8" --name b32 --threads 2 --concurrency 1,8,32 --seconds 30 --warmup 5 \
    --out "$OUT/int8-1x2"
}

soak() {
  "${BENCH[@]}" "$DEMO" --name demo --endpoints image --threads 1 --server-instances 2 --server-threads 1 \
    --concurrency 8 --seconds "${SOAK_SECONDS:-60}" --bad-every 20 --rss-every 2 --no-baseline \
    --out "$OUT/soak-${SOAK_SECONDS:-60}s"
}

openai() {
  "${BENCH[@]}" "$BUNDLE_INT8" --name b32 --threads 2 --concurrency 1,8 --protocols http,openai --seconds 20 \
    --warmup 3 --out "$OUT/openai-int8${RUN:+-$RUN}"
  "${BENCH[@]}" "$DEMO" --name demo --threads 2 --concurrency 1,8 --protocols http,openai --seconds 10 \
    --out "$OUT/openai-demo${RUN:+-$RUN}"
}

for stage in "${@:-layouts demo int8 soak openai}"; do
  for s in $stage; do "$s"; done
done
