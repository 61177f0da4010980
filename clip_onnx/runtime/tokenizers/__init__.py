"""Torch-free tokenizers, one module per algorithm, chosen by the manifest's ``tokenizer.kind``."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Mapping

from clip_onnx.errors import BundleError

# kind -> "module:Class"; imported on first use so a bundle only loads the algorithm it needs.
TOKENIZERS = {
    "yttm_bpe": "clip_onnx.runtime.tokenizers.yttm_bpe:YttmBpeTokenizer",
    "wordpiece": "clip_onnx.runtime.tokenizers.wordpiece:WordPieceTokenizer",
    "clip_bpe": "clip_onnx.runtime.tokenizers.clip_bpe:ClipBpeTokenizer",
    "unigram": "clip_onnx.runtime.tokenizers.unigram:UnigramTokenizer",
}


def load_tokenizer(spec: Mapping, bundle_dir: Path):
    kind = spec.get("kind")
    if kind not in TOKENIZERS:
        raise BundleError(f"unknown tokenizer kind {kind!r}; this clip-onnx knows {sorted(TOKENIZERS)}")
    module, cls = TOKENIZERS[kind].split(":")
    return getattr(importlib.import_module(module), cls).from_spec(spec, bundle_dir)
