"""Small, valid tokenizer files of every runtime algorithm, written without the reference libraries.

The runtime tier's tokenizer contract and property tests run on them under an
install without torch, transformers, tokenizers, open_clip or youtokentome.
The parity tests against those libraries (tests/export/test_<algorithm>.py)
use real vocabularies instead.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_BPE = ROOT / "clip_onnx" / "assets" / "ruclip-demo" / "bpe.model"

# CLIP BPE merges over byte-level pieces (open_clip's format: a header line, then "a b" rules).
CLIP_MERGES = ["t h", "th e</w>", "a </w>", "c a", "ca t</w>", "o f</w>", "p h", "ph o", "pho t", "phot o</w>"]

WORDPIECE_PIECES = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *"abcdefghijklmnopqrstuvwxyz",
    "##s",
    "##ing",
    "the",
    *"абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
    "кот",
    "##ы",
    "中",
    "文",
    "猫",
    "!",
    ",",
    ".",
]


def yttm_bpe(directory: Path) -> Path:
    """The embedded demo model's youtokentome BPE model (a real one, trained on its captions)."""
    return Path(shutil.copyfile(DEMO_BPE, directory / "bpe.model"))


def clip_bpe(directory: Path) -> Path:
    path = directory / "vocab.txt.gz"
    path.write_bytes(gzip.compress(("#version: test\n" + "\n".join(CLIP_MERGES) + "\n").encode()))
    return path


def wordpiece(directory: Path) -> Path:
    path = directory / "vocab.txt"
    path.write_text("\n".join(WORDPIECE_PIECES) + "\n", encoding="utf-8")
    return path


def unigram(directory: Path) -> Path:
    """An XLM-R-shaped tokenizer.json: NFKC and lowercase, Metaspace, <s> $A </s>."""
    vocab = [["<unk>", 0.0], ["<pad>", 0.0], ["<s>", 0.0], ["</s>", 0.0], ["\u2581", -2.0]]
    vocab += [[c, -3.0 - i / 10] for i, c in enumerate("abcdefghijklmnopqrstuvwxyzкотмир中")]
    vocab += [["\u2581the", -1.5], ["\u2581кот", -1.5], ["ing", -2.5]]
    doc = {
        "model": {"type": "Unigram", "unk_id": 0, "vocab": vocab},
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [2], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [3], "tokens": ["</s>"]},
            },
        },
        "added_tokens": [{"id": 1, "content": "<pad>", "special": True}],
    }
    path = directory / "tokenizer.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


# kind (as in clip_onnx.runtime.tokenizers.TOKENIZERS) -> writer
WRITERS = {"yttm_bpe": yttm_bpe, "clip_bpe": clip_bpe, "wordpiece": wordpiece, "unigram": unigram}
