"""Torch-free tokenizers, one module per algorithm, chosen by the manifest's ``tokenizer.kind``.

Every tokenizer follows one contract (``base.Tokenizer``): called with a list
of texts, it returns the textual graph's feed, ``input_ids`` plus
``attention_mask`` where the model takes one.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from clip_onnx.errors import BundleError
from clip_onnx.manifest import TokenizerSpec
from clip_onnx.runtime.tokenizers.base import Tokenizer

# kind -> "module:Class"; imported on first use so a bundle only loads the algorithm it needs.
TOKENIZERS: Mapping[str, str] = MappingProxyType(
    {
        "yttm_bpe": "clip_onnx.runtime.tokenizers.yttm_bpe:YttmBpeTokenizer",
        "wordpiece": "clip_onnx.runtime.tokenizers.wordpiece:WordPieceTokenizer",
        "clip_bpe": "clip_onnx.runtime.tokenizers.clip_bpe:ClipBpeTokenizer",
        "unigram": "clip_onnx.runtime.tokenizers.unigram:UnigramTokenizer",
    }
)


def tokenizer_class(kind: object) -> type[Tokenizer]:
    """The registered tokenizer class of ``kind``; BundleError naming the known kinds for anything else."""
    if not isinstance(kind, str) or kind not in TOKENIZERS:
        raise BundleError(f"unknown tokenizer kind {kind!r}; this clip-onnx knows {sorted(TOKENIZERS)}")
    module, cls = TOKENIZERS[kind].split(":")
    found: type[Tokenizer] = getattr(importlib.import_module(module), cls)
    return found


def load_tokenizer(spec: TokenizerSpec | Mapping[str, Any], bundle_dir: str | Path) -> Tokenizer:
    """The tokenizer a manifest's tokenizer spec describes, its file read from ``bundle_dir``."""
    if isinstance(spec, TokenizerSpec):
        spec = spec.to_dict()
    return tokenizer_class(spec.get("kind")).from_spec(spec, bundle_dir)


__all__ = ["TOKENIZERS", "Tokenizer", "load_tokenizer", "tokenizer_class"]
