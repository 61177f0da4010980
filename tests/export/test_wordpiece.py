"""The pure-Python WordPiece tokenizer must give exactly transformers' BERT ids (Chinese-CLIP's vocabulary).

The reference is transformers' Python BERT tokenizer (``BertTokenizer`` in 4.x,
``BertTokenizerLegacy`` in 5.x): 100% of ids and attention masks, two configs.

Two other implementations are compared too, and every string on which they
differ must be explained by one of their documented differences:

* the Rust tokenizer (``BertTokenizerFast``; plain ``BertTokenizer`` in
  transformers 5.x) keeps unassigned code points (an [UNK]) where the Python
  one drops them, uses Unicode tables of its own version (characters new since
  then are not punctuation / accents to it), lowercases a word-final "Σ" to
  "σ" instead of "ς", starts BERT's CJK range at U+2B920 instead of U+2B820,
  does not NFC-normalise, and does not recognise a special token that only
  appears once cleaning dropped a character from it ("[C\\u200bLS]");
* Chinese-CLIP's own ``cn_clip.clip.tokenize`` keeps private-use and
  unassigned characters (only Cc / Cf are dropped), splits special tokens
  written in the text like any other text, and lets words of up to 200
  characters through (``max_input_chars_per_word=200``; transformers: 100).
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import transformers

from clip_onnx.runtime.tokenizers.wordpiece import WordPieceTokenizer

try:  # run as `python -m pytest` (repo root on sys.path) or plain `pytest` (tests/ on sys.path)
    from tests.chinese_corpus import chinese_strings
except ImportError:
    from chinese_corpus import chinese_strings

try:  # transformers >= 5: BertTokenizer is the Rust one, the Python one was renamed
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as PythonBert
except ImportError:  # transformers 4.x
    from transformers import BertTokenizer as PythonBert
RustBert = transformers.BertTokenizerFast

CONTEXT = 52
SPECIAL_RE = re.compile(r"\[(?:CLS|SEP|PAD|UNK|MASK)\]")
CONFIGS = {"lower": True, "cased": False}


@pytest.fixture(scope="session")
def vocab_path() -> Path:
    spec = importlib.util.find_spec("cn_clip")  # not imported: cn_clip.clip pulls in torch and torchvision
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("cn_clip is not installed; scripts/dev-setup.sh installs it (pip install --no-deps cn_clip)")
    path = Path(next(iter(spec.submodule_search_locations))) / "clip" / "vocab.txt"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    strings = chinese_strings()
    assert len(strings) >= 10_000
    return strings


@pytest.fixture(scope="session")
def ours(vocab_path):
    return {name: WordPieceTokenizer(vocab_path, lowercase=lower) for name, lower in CONFIGS.items()}


def batch(tok, texts) -> dict[str, np.ndarray]:
    out = tok(texts, padding="max_length", truncation=True, max_length=CONTEXT)
    return {k: np.array(out[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}


def first_mismatches(texts, expected, got, limit=5) -> str:
    rows = np.flatnonzero((expected != got).any(axis=1))
    shown = "\n".join(
        f"  {texts[i]!r:.80}\n    reference: {expected[i][:24].tolist()}\n    ours:      {got[i][:24].tolist()}"
        for i in rows[:limit]
    )
    return f"{rows.size} of {len(texts)} texts differ, first ones:\n{shown}"


def drop_other(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c)[0] != "C")


@pytest.fixture(scope="session", params=list(CONFIGS))
def python_reference(request, vocab_path, corpus):
    name = request.param
    return name, batch(PythonBert(str(vocab_path), do_lower_case=CONFIGS[name]), corpus)


def test_matches_python_bert_tokenizer(python_reference, ours, corpus):
    name, expected = python_reference
    got = ours[name](corpus)
    for key in ("input_ids", "attention_mask"):
        assert got[key].dtype == np.int64 and got[key].shape == (len(corpus), CONTEXT)
        assert np.array_equal(got[key], expected[key]), f"{key}: " + first_mismatches(corpus, expected[key], got[key])
    # Warm caches give the same answer.
    np.testing.assert_array_equal(ours[name](corpus[:1000])["input_ids"], expected["input_ids"][:1000])
    # The corpus reaches the interesting cases.
    ids, lengths = expected["input_ids"], expected["attention_mask"].sum(axis=1)
    assert (lengths == 2).sum() > 100, "too few texts that encode to nothing"
    assert (lengths == CONTEXT).sum() > 400, "too few texts cut at the context length"
    assert (ids == 100).any(axis=1).sum() > 300, "too few texts with [UNK]"
    assert (ids[:, 1:] == 101).any(), "no [CLS] written in a text"


def explain_rust_difference(text: str, lowercase: bool, ours_tok, rust) -> str | None:
    """Which documented difference of the Rust tokenizer ``text`` hits, or None."""
    if SPECIAL_RE.findall(drop_other(text)) != SPECIAL_RE.findall(text):
        return "special token joined up by cleaning"
    if lowercase and "Σ" in text:
        return "final sigma"
    if not lowercase and unicodedata.normalize("NFC", text) != text:
        return "NFC"
    for ch in dict.fromkeys(text):
        probe = f"a{ch}b"
        if rust(probe, add_special_tokens=False)["input_ids"] != ours_tok.encode(probe):
            if unicodedata.category(ch) == "Cn":
                return "unassigned code point"
            if 0x2B820 <= ord(ch) < 0x2B920:
                return "CJK range"
            return "Unicode version"
    return None


@pytest.mark.parametrize("name", list(CONFIGS))
def test_agrees_with_rust_bert_tokenizer_up_to_documented_differences(name, vocab_path, ours, corpus):
    rust = RustBert(str(vocab_path), do_lower_case=CONFIGS[name])
    expected = batch(rust, corpus)
    got = ours[name](corpus)
    rows = np.flatnonzero(
        (expected["input_ids"] != got["input_ids"]).any(axis=1)
        | (expected["attention_mask"] != got["attention_mask"]).any(axis=1)
    )
    reasons, unexplained = {}, []
    for i in rows:
        reason = explain_rust_difference(corpus[i], CONFIGS[name], ours[name], rust)
        reasons[reason] = reasons.get(reason, 0) + 1
        if reason is None:
            unexplained.append(i)
    print(f"\n[{name}] Rust tokenizer: {len(corpus) - rows.size} of {len(corpus)} identical; differences: {reasons}")
    assert not unexplained, first_mismatches(
        [corpus[i] for i in unexplained], expected["input_ids"][unexplained], got["input_ids"][unexplained]
    )
    assert rows.size < 0.05 * len(corpus)


def test_cn_clip_tokenize_agrees_up_to_documented_differences(vocab_path, corpus):
    import cn_clip.clip as cn_clip  # needs torch, torchvision and six

    expected = cn_clip.tokenize(corpus, context_length=CONTEXT).numpy()
    basic = cn_clip._tokenizer.basic_tokenizer
    for limit in (100, 200):
        got = WordPieceTokenizer(vocab_path, max_input_chars_per_word=limit)(corpus)["input_ids"]
        rows = np.flatnonzero((expected != got).any(axis=1))
        reasons, unexplained = {}, []
        for i in rows:
            text = corpus[i]
            if SPECIAL_RE.search(drop_other(text)):
                reason = "special token in the text"
            elif any(unicodedata.category(c) in ("Co", "Cn") for c in text):
                reason = "private-use or unassigned code point"
            elif limit == 100 and any(100 < len(w) <= 200 for w in basic.tokenize(text)):
                reason = "word of 101-200 characters"
            else:
                reason = None
                unexplained.append(i)
            reasons[reason] = reasons.get(reason, 0) + 1
        print(
            f"\ncn_clip.clip.tokenize vs max_input_chars_per_word={limit}: "
            f"{len(corpus) - rows.size} of {len(corpus)} identical; differences: {reasons}"
        )
        assert not unexplained, first_mismatches(
            [corpus[i] for i in unexplained], expected[unexplained], got[unexplained]
        )


def test_encode_matches_untruncated_ids(vocab_path, ours, corpus):
    reference = PythonBert(str(vocab_path))
    texts = corpus[::10]
    expected = [reference.encode(t, add_special_tokens=False) for t in texts]
    got = [ours["lower"].encode(t) for t in texts]
    assert got == expected
    assert max(map(len, got)) > 200


@pytest.mark.parametrize(
    "options",
    [
        {"lowercase": False, "strip_accents": True},
        {"lowercase": True, "strip_accents": False},
        {"lowercase": True, "tokenize_chinese_chars": False},
    ],
)
def test_other_options_match(vocab_path, corpus, options):
    texts = corpus[::8]
    reference = PythonBert(
        str(vocab_path),
        do_lower_case=options["lowercase"],
        strip_accents=options.get("strip_accents"),
        tokenize_chinese_chars=options.get("tokenize_chinese_chars", True),
    )
    expected = batch(reference, texts)["input_ids"]
    got = WordPieceTokenizer(vocab_path, **options)(texts)["input_ids"]
    assert np.array_equal(got, expected), first_mismatches(texts, expected, got)


def test_from_spec(vocab_path, tmp_path, corpus):
    (tmp_path / "vocab.txt").write_bytes(vocab_path.read_bytes())
    spec = {
        "kind": "wordpiece",
        "file": "vocab.txt",
        "context_length": 16,
        "lowercase": True,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
    }
    tok = WordPieceTokenizer.from_spec(spec, tmp_path)
    assert tok.kind == "wordpiece" and tok.vocab_size == 21128
    assert (tok.cls_id, tok.sep_id, tok.pad_id, tok.unk_id) == (101, 102, 0, 100)
    texts = corpus[:300]
    out = tok(texts)
    assert out["input_ids"].shape == out["attention_mask"].shape == (300, 16)
    for text, row, mask in zip(texts, out["input_ids"], out["attention_mask"], strict=True):
        ids = tok.encode(text)[:14]
        assert row.tolist() == [101, *ids, 102] + [0] * (14 - len(ids)), repr(text)
        assert mask.tolist() == [1] * (len(ids) + 2) + [0] * (14 - len(ids))
    assert tok(["一张猫的照片"])["input_ids"][0, :8].tolist() == [101, 671, 2476, 4344, 4638, 4212, 4275, 102]


def test_small_vocab_reads_like_transformers(tmp_path):
    # CRLF line ends, a repeated token (its last line wins) and no final newline.
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nun\r\n##aff\r\n##able\r\nun\r\n##a")
    tok = WordPieceTokenizer(path)
    assert tok.encode("UnAffable unaffablea xyz") == [7, 5, 6, 7, 5, 6, 8, 1]
    assert tok(["unaffable"])["input_ids"][0, :5].tolist() == [2, 7, 5, 6, 3]
