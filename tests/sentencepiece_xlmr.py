"""A tokenizer.json shaped like the hub's xlm-roberta-large one, from a SentencePiece model trained here.

The hub file cannot be downloaded, so this trains a small SentencePiece Unigram
model with the ``nmt_nfkc`` rule XLM-R was trained with (its charsmap is the
one SentencePiece compiles for that rule) on the multilingual test corpus, and
lays it out as the hub file does: ``<s> <pad> </s> <unk>`` at 0..3, ``<mask>``
last, ``Sequence[Precompiled, Replace(" {2,}", " ")]``, a legacy Metaspace and
``<s> $A </s>``.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

try:  # run as `python -m pytest` (repo root on sys.path) or plain `pytest` (tests/ on sys.path)
    from tests.multilingual_corpus import training_lines
except ImportError:
    from multilingual_corpus import training_lines

TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizerFast",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
    "model_max_length": 512,
}


def train(vocab_size: int = 4000) -> tuple[list[tuple[str, float]], bytes]:
    """(pieces with scores, precompiled charsmap) of a SentencePiece Unigram model with XLM-R's special ids."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()),
        model_writer=out,
        vocab_size=vocab_size,
        model_type="unigram",
        normalization_rule_name="nmt_nfkc",
        character_coverage=0.9995,
        num_threads=1,
        minloglevel=2,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        bos_piece="<s>",
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(out.getvalue())
    return [(p.piece, p.score) for p in proto.pieces], proto.normalizer_spec.precompiled_charsmap


def hub_layout(vocab: list[tuple[str, float]], charsmap: bytes) -> dict:
    """The tokenizer.json object, as the hub's xlm-roberta-large file writes it."""
    mask = len(vocab)
    specials = [(p, i) for i, (p, _) in enumerate(vocab[:4])] + [("<mask>", mask)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": p,
                "single_word": False,
                "lstrip": p == "<mask>",
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for p, i in specials
        ],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode("ascii")},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            ],
        },
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]},
            },
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
        "model": {"type": "Unigram", "unk_id": 3, "vocab": [[p, s] for p, s in vocab] + [["<mask>", 0.0]]},
    }


def write_hub_directory(directory: Path, data: dict) -> Path:
    """``tokenizer.json`` and ``tokenizer_config.json`` in ``directory``, as a hub snapshot holds them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG), encoding="utf-8")
    return directory
