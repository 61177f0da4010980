"""SentencePiece's precompiled charsmap (the real XLM-R normalizer) normalizes and tokenizes as ``tokenizers`` does."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import unicodedata

import google.protobuf  # noqa: F401  (sentencepiece writes its model protos with it)
import numpy as np
import pytest
import sentencepiece  # noqa: F401
from tokenizers import Tokenizer, normalizers

from clip_onnx.errors import BundleError  # noqa: E402
from clip_onnx.runtime.tokenizers.charsmap import PrecompiledCharsmap  # noqa: E402
from clip_onnx.runtime.tokenizers.unigram import UnigramTokenizer  # noqa: E402

try:  # run as `python -m pytest` (repo root on sys.path) or plain `pytest` (tests/ on sys.path)
    from tests import sentencepiece_xlmr
    from tests.multilingual_corpus import corpus_strings
except ImportError:
    import sentencepiece_xlmr
    from multilingual_corpus import corpus_strings

CONTEXT = 77


@pytest.fixture(scope="module")
def trained():
    """(vocab, charsmap) of a SentencePiece nmt_nfkc Unigram model (about 5 s)."""
    return sentencepiece_xlmr.train()


@pytest.fixture(scope="module")
def hub_file(trained, tmp_path_factory):
    directory = sentencepiece_xlmr.write_hub_directory(
        tmp_path_factory.mktemp("xlmr"), sentencepiece_xlmr.hub_layout(*trained)
    )
    return directory / "tokenizer.json"


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    strings = [t for t in corpus_strings(seed=3) if not any(0xD800 <= ord(c) <= 0xDFFF for c in t)]
    assert len(strings) >= 10_000
    return strings


def _assigned() -> list[str]:
    return [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"]


def test_every_assigned_code_point_normalizes_as_tokenizers(trained):
    reference, ours = normalizers.Precompiled(trained[1]), PrecompiledCharsmap(trained[1])
    singles = _assigned()
    bad = [c for c in singles if reference.normalize_str(c) != ours(c)]
    assert not bad, [hex(ord(c)) for c in bad[:20]]
    # The charsmap really rewrites: fullwidth, ligatures, compatibility forms, some spaces.
    assert sum(ours(c) != c for c in singles) > 4000


def test_grapheme_clusters_normalize_as_tokenizers(trained):
    """Combining marks, jamo, ZWJ and regional indicators: where whole-cluster lookup and its shortest match bite."""
    reference, ours = normalizers.Precompiled(trained[1]), PrecompiledCharsmap(trained[1])
    rnd = random.Random(0)
    marks = [c for c in _assigned() if unicodedata.category(c) in ("Mn", "Mc", "Me")]
    jamo = [chr(c) for c in (*range(0x1100, 0x1200), *range(0xA960, 0xA980), *range(0xD7B0, 0xD7FC))]
    others = [
        "\u200d",
        "\u200c",
        "\ufe0f",
        "\x00",
        "\U0001f3fb",
        "\U0001f1ef",
        "\U0001f1f5",
        " ",
        "\u3099",
        "\u309a",
        *"aeiouAEIOUカキクはひ가각ㄱ👨👩ｶﾞ",
    ]
    pool = marks[::3] + jamo + others
    texts = ["".join(rnd.choice(pool) for _ in range(rnd.randint(1, 6))) for _ in range(60_000)]
    texts += ["e\u0301", "e\u0301\u0301\u0301", "\u1100\u1161\u11a8", "ｶﾞ", "👨\u200d👩\u200d👧", "🇯🇵🇷🇺", "a\x00b"]
    bad = [t for t in texts if reference.normalize_str(t) != ours(t)]
    assert not bad, [[hex(ord(c)) for c in t] for t in bad[:10]]


def test_hub_layout_ids_match_tokenizers(trained, hub_file, corpus):
    reference = Tokenizer.from_file(str(hub_file))
    reference.enable_truncation(max_length=CONTEXT)
    reference.enable_padding(length=CONTEXT, pad_id=1, pad_token="<pad>")
    encodings = reference.encode_batch(corpus)
    expected = np.array([e.ids for e in encodings], dtype=np.int64)
    got = UnigramTokenizer(hub_file, context_length=CONTEXT)(corpus)
    bad = [i for i in range(len(corpus)) if not np.array_equal(expected[i], got["input_ids"][i])]
    assert not bad, [(corpus[i][:60], encodings[i].tokens[:12]) for i in bad[:5]]
    np.testing.assert_array_equal(got["attention_mask"], np.array([e.attention_mask for e in encodings]))
    # The corpus reaches what the charsmap changes.
    normalize = PrecompiledCharsmap(trained[1])
    assert sum(normalize(t) != t for t in corpus) > 1000


def test_open_clip_tokenizer_of_a_hub_snapshot_is_what_the_bundle_runs(hub_file, corpus, tmp_path):
    """The exporter's path: open_clip's HFTokenizer on the hub files, saved, read back with exact scores."""
    import ftfy
    import transformers  # noqa: F401  (HFTokenizer loads the XLM-R class from it)
    from open_clip import tokenizer as oc_tokenizer

    hf = oc_tokenizer.HFTokenizer(str(hub_file.parent), context_length=CONTEXT, clean="whitespace")
    hf.save_pretrained(str(tmp_path))
    saved = json.loads((tmp_path / "tokenizer.json").read_text("utf-8"))
    assert "Precompiled" in json.dumps(saved["normalizer"])
    ours = UnigramTokenizer.from_spec(
        {
            "kind": "unigram",
            "file": "tokenizer.json",
            "context_length": CONTEXT,
            "clean": "whitespace",
            "scores": "exact",
        },
        tmp_path,
    )
    texts = [t for t in corpus[::3] if ftfy.fix_text(t) == ftfy.fix_text(t, fix_encoding=False)]  # see clip_bpe
    expected = hf(texts).numpy()
    got = ours(texts)["input_ids"]
    bad = [i for i in range(len(texts)) if not np.array_equal(expected[i], got[i])]
    assert not bad, [texts[i][:60] for i in bad[:5]]


def test_without_regex_the_error_names_the_extra(hub_file):
    code = (
        "import sys; sys.modules['regex'] = None\n"
        "from clip_onnx.errors import BundleError\n"
        "from clip_onnx.runtime.tokenizers.unigram import UnigramTokenizer\n"
        f"try:\n    UnigramTokenizer({str(hub_file)!r})\n"
        "except BundleError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "regex" in out and "clip-onnx[multilingual]" in out


@pytest.mark.parametrize(
    "blob, fragment",
    [
        ("AAAA", "too short"),
        ("not base64!", "not valid base64"),
        ("", "non-empty"),
        (base64.b64encode(b"\x10\x00\x00\x00abcd").decode(), "does not fit"),
        (base64.b64encode(b"\x04\x00\x00\x00\x00\x00\x00\x00\xff\xfe").decode(), "not UTF-8"),
    ],
)
def test_malformed_charsmap_is_a_bundle_error(blob, fragment):
    with pytest.raises(BundleError, match=fragment):
        PrecompiledCharsmap.from_base64(blob)
