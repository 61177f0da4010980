#!/usr/bin/env bash
# Create .venv with everything the demo and the tests need.  Idempotent: a second
# run only checks.  Torch is pinned here (not in setup.cfg): 2.13.0 resolves to
# the local CPU build, while an unpinned torch pulls gigabytes of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.clip-onnx-setup-v2

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f "$STAMP" ] || [ setup.cfg -nt "$STAMP" ] || [ "$0" -nt "$STAMP" ]; then
  .venv/bin/pip install -q --upgrade pip wheel
  .venv/bin/pip install -q torch==2.13.0
  # youtokentome 1.0.6 has no wheels and needs Cython present at build time.
  .venv/bin/pip install -q cython setuptools wheel
  .venv/bin/pip install -q --no-build-isolation youtokentome==1.0.6
  .venv/bin/pip install -q -e ".[export,test,bench,multilingual]"
  # Test references only: torchvision for RuCLIP's transform, ruclip's own model.py.
  .venv/bin/pip install -q --no-deps torchvision
  # Reference tokenizers for the WordPiece tests (cn_clip ships Chinese-CLIP's vocab.txt).
  .venv/bin/pip install -q transformers six
  .venv/bin/pip install -q --no-deps cn_clip
  # open_clip's own tokenizer and transforms are the references for the CLIP BPE and
  # OpenCLIP tests; --no-deps keeps pip from swapping the pinned CPU torch.
  .venv/bin/pip install -q --no-deps open_clip_torch==3.3.0 timm
  .venv/bin/pip install -q ftfy==6.3.1 wcwidth regex tokenizers safetensors
  # SentencePiece trains the charsmap-normalized (real XLM-R style) tokenizer the Unigram tests use.
  .venv/bin/pip install -q sentencepiece protobuf
  # TensorRT-RTX builds SM89 plans on the CPU: the CI-side check that both graphs build.
  .venv/bin/pip install -q tensorrt-rtx-cu13
  # Triton client for the server tests, and model_config_pb2 for the repository writer. --no-deps
  # because tritonclient pins protobuf<7 while sentencepiece's generated code needs protobuf 7;
  # its 6.x-generated model_config_pb2 loads on the newer runtime.
  .venv/bin/pip install -q --no-deps tritonclient==2.73.0
  .venv/bin/pip install -q "grpcio>=1.81.1" "python-rapidjson>=0.9.1" "geventhttpclient>=2.3.3" "greenlet<3.4.0"
  # The OpenAI-compatible API (the [serve] extra's FastAPI stack, here for the docs and serve-bench) and the
  # clients its tests drive it with: the openai SDK, langchain-openai, litellm and LlamaIndex's OpenAI-like.
  .venv/bin/pip install -q fastapi==0.165.0 uvicorn==0.55.0 uvloop==0.23.0 httptools==0.9.0
  .venv/bin/pip install -q openai==3.63.0 langchain-openai==1.8.1 litellm==1.110.2 \
    llama-index-embeddings-openai-like==0.4.0
  # Lint, format and type checks (configured in pyproject.toml; .ci/run runs them).
  .venv/bin/pip install -q mypy==2.4.1 ruff==0.17.6
  # The documentation site (mkdocs.yml; .ci/run builds it with --strict): the [docs] extra, pinned.
  .venv/bin/pip install -q mkdocs==1.6.1 mkdocs-material==9.8.2 mkdocstrings-python==2.0.11
  # Dataset embedding: parquet (the [data] extra) and Ray Data for the cluster job (the [ray] extra).
  .venv/bin/pip install -q pyarrow==26.0.1 "ray[data]==2.60.0"
  # webdataset shards: webdataset's own TarWriter and braceexpand, and faiss-cpu for the index built from the
  # parquet output, the references of tests/serving/test_shards_tools.py (img2dataset has a venv of its own).
  .venv/bin/pip install -q webdataset==1.0.2 faiss-cpu==1.15.1
  mkdir -p .cache
  [ -f .cache/ruclip-0.0.2-py3-none-any.whl ] || .venv/bin/pip download -q --no-deps ruclip==0.0.2 -d .cache
  # The registry's torchvision is a CUDA build whose compiled ops don't load against the
  # CPU torch; its pure-Python transforms import once this module is stubbed.  Dev/test only.
  site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "import sys, types; sys.modules.setdefault('torchvision._meta_registrations', types.ModuleType('torchvision._meta_registrations'))" \
    > "$site/_clip_onnx_dev_torchvision_shim.pth"
  touch "$STAMP"
fi
bash scripts/triton-venv.sh
bash scripts/img2dataset-venv.sh
