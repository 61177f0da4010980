"""The torch-free CLIP BPE must give exactly open_clip's ids.

With ftfy installed the reference is plain ``open_clip.tokenize``, mojibake
repair included. Without ftfy the runtime skips that one heuristic; the tests
that simulate it compare against open_clip with ftfy's ``fix_encoding`` off.
"""

from __future__ import annotations

import gzip
import logging
import sys
import unicodedata
from pathlib import Path

import ftfy
import numpy as np
import open_clip
import pytest
import regex
from open_clip import tokenizer as oc_tokenizer

from clip_onnx.runtime.tokenizers import clip_bpe, text_cleaning  # noqa: E402
from clip_onnx.runtime.tokenizers.clip_bpe import ClipBpeTokenizer  # noqa: E402
from clip_onnx.runtime.tokenizers.text_cleaning import clean_text, fix_text  # noqa: E402

try:  # run as `python -m pytest` (repo root on sys.path) or plain `pytest` (tests/ on sys.path)
    from tests.multilingual_corpus import corpus_strings
except ImportError:
    from multilingual_corpus import corpus_strings

CONTEXT = 77
VOCAB = Path(oc_tokenizer.default_bpe())
# Text that was UTF-8 read as a single-byte code page, which ftfy repairs, and
# "listí††", legitimate Czech that ftfy "repairs" into "list톆" all the same.
MOJIBAKE = [
    "cafÃ©",
    "Ã¼ber alles",
    "â€œquotedâ€\x9d",
    "SchÃ¶n",
    "ÐŸÑ€Ð¸Ð²ÐµÑ‚",
    "voilÃ  le travail",
    "itâ€™s",
    "æ—¥æœ¬",
    "Ã\xa0 bientÃ´t",
    "l’hÃ´tel",
    "ðŸ˜€ smile",
    "Ð¼Ð¸Ñ€ peace",
    "listí††",
    "&Atilde;&copy; entity",
]
_FTFY_FIX_TEXT = ftfy.fix_text


def _fix_text_without_repair(text, *args, **kwargs):
    return _FTFY_FIX_TEXT(text, *args, **{"fix_encoding": False, **kwargs})


def without_mojibake_repair(fn, *args, **kwargs):
    """Call fn with ftfy's fix_encoding switched off, what the runtime does without ftfy."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ftfy, "fix_text", _fix_text_without_repair)
        return fn(*args, **kwargs)


@pytest.fixture
def no_ftfy(monkeypatch, caplog):
    """The runtime as on a machine without ftfy: the import fails, and the warning is captured."""
    monkeypatch.setitem(sys.modules, "ftfy", None)
    text_cleaning._ftfy_fix_text.cache_clear()
    caplog.set_level(logging.WARNING, logger=text_cleaning.__name__)
    yield caplog
    text_cleaning._ftfy_fix_text.cache_clear()


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    strings = corpus_strings(seed=1)
    assert len(strings) >= 10_000
    return strings


@pytest.fixture(scope="module")
def repaired(corpus) -> list[int]:
    """Rows that ftfy's mojibake heuristic rewrites."""
    return [i for i, t in enumerate(corpus) if _FTFY_FIX_TEXT(t) != _fix_text_without_repair(t)]


@pytest.fixture(scope="module")
def plain(corpus, repaired) -> list[str]:
    """The corpus less the mojibake-repaired rows, for the checks of the ftfy-free fix_text."""
    skip = set(repaired)
    return [t for i, t in enumerate(corpus) if i not in skip]


@pytest.fixture(scope="module")
def tok() -> ClipBpeTokenizer:
    return ClipBpeTokenizer(VOCAB)


@pytest.fixture(scope="module")
def expected(corpus) -> np.ndarray:
    return open_clip.tokenize(corpus).numpy()


def first_mismatches(texts, expected, got, limit=5) -> str:
    lines = []
    bad = [
        (t, [int(x) for x in e], [int(x) for x in g])
        for t, e, g in zip(texts, expected, got, strict=True)
        if list(e) != list(g)
    ]
    for text, e, g in bad[:limit]:
        at = next((k for k, (x, y) in enumerate(zip(e, g, strict=False)) if x != y), min(len(e), len(g)))
        lines.append(
            f"  {text!r:.120}\n    first difference at {at}\n"
            f"    open_clip: {e[max(0, at - 3) : at + 12]}\n    ours:      {g[max(0, at - 3) : at + 12]}"
        )
    return f"{len(bad)} of {len(texts)} texts differ, first ones:\n" + "\n".join(lines)


def test_call_matches_open_clip_tokenize(tok, corpus, expected, repaired):
    feed = tok(corpus)
    assert set(feed) == {"input_ids"}  # the model takes no attention mask
    got = feed["input_ids"]
    assert got.dtype == np.int64 and got.shape == (len(corpus), CONTEXT)
    rows = np.flatnonzero((got != expected).any(axis=1))
    assert rows.size == 0, first_mismatches([corpus[i] for i in rows], expected[rows], got[rows])
    # Warm caches give the same answer.
    np.testing.assert_array_equal(tok(corpus[:2000])["input_ids"], expected[:2000])
    # The corpus reaches the interesting cases, ftfy's repair among them.
    assert repaired, "no corpus row exercises ftfy's mojibake repair"
    lengths = (expected != 0).sum(axis=1)
    assert (lengths == 2).sum() > 100, "too few texts that encode to nothing"
    assert (expected[:, -1] == 49407).sum() > 500, "too few texts truncated at 77 tokens"
    assert ((expected[:, 1:-1] == 49406).any(axis=1)).sum() > 20, "no literal <start_of_text> in the corpus"


def test_encode_matches_simple_tokenizer(tok, corpus):
    reference = oc_tokenizer.SimpleTokenizer()
    expected = [reference.encode(t) for t in corpus]
    got = [tok.encode(t) for t in corpus]
    assert got == expected, first_mismatches(corpus, expected, got)
    assert any(len(ids) > 300 for ids in expected)


def test_mojibake_matches_open_clip(tok):
    got = tok(MOJIBAKE)["input_ids"]
    np.testing.assert_array_equal(got, open_clip.tokenize(MOJIBAKE).numpy())
    # ftfy did change every one of them, so the rows above went through its repair.
    unrepaired = without_mojibake_repair(open_clip.tokenize, MOJIBAKE).numpy()
    assert all((got[i] != unrepaired[i]).any() for i in range(len(MOJIBAKE)))


def test_without_ftfy_only_mojibake_repair_is_skipped(no_ftfy, corpus, repaired):
    tok = ClipBpeTokenizer(VOCAB)  # a fresh one: the module's fixture has cached rows
    rows = sorted(set(repaired) | set(range(0, len(corpus), 7)))
    texts = [corpus[i] for i in rows] + MOJIBAKE
    np.testing.assert_array_equal(tok(texts)["input_ids"], without_mojibake_repair(open_clip.tokenize, texts).numpy())
    warnings = [r.getMessage() for r in no_ftfy.records if "ftfy is not installed" in r.getMessage()]
    assert len(warnings) == 1 and "clip-onnx[ftfy]" in warnings[0], warnings


def test_ascii_fast_path_is_what_ftfy_does(tok):
    """ASCII text without "&" skips ftfy; ftfy itself would return the same cleaning."""
    texts = [
        "a photo of a CAT",
        "\x1b[31mred\x1b[0m text",
        "tabs\tand\r\nbreaks\x0c",
        "ctrl \x00\x07\x7f",
        "'quoted' \"double\" <b>html</b>",
        "<start_of_text>x",
        "ﬁ not ascii",
        "&amp;amp; twice",
        "",
    ]
    for text in texts:
        assert text_cleaning.open_clip_fix_text(text) == _FTFY_FIX_TEXT(text), repr(text)
    np.testing.assert_array_equal(tok(texts)["input_ids"], open_clip.tokenize(texts).numpy())


def test_cleaning_matches_open_clip(plain):
    for name, reference in [
        ("lower", oc_tokenizer._clean_lower),
        ("whitespace", oc_tokenizer._clean_whitespace),
        ("canonicalize", oc_tokenizer._clean_canonicalize),
    ]:
        texts = plain if name == "lower" else plain[::5]
        bad = [t for t in texts if clean_text(t, name) != reference(t)]
        assert not bad, f"{name}: {len(bad)} differ, e.g. {bad[:3]!r:.300}"


def test_fix_text_is_ftfy_without_mojibake_repair(corpus):
    bad = [t for t in corpus + MOJIBAKE if fix_text(t) != _fix_text_without_repair(t)]
    assert not bad, f"{len(bad)} differ from ftfy.fix_text(fix_encoding=False), e.g. {bad[:3]!r:.300}"
    # ftfy's detector looks at much of the corpus (C1 controls, odd symbols) and changes nothing there.
    from ftfy.badness import is_bad

    assert sum(map(is_bad, corpus)) > 100


def test_context_length_and_clean_options(plain):
    texts = plain[::10]
    short = ClipBpeTokenizer.from_spec({"kind": "clip_bpe", "file": VOCAB.name, "context_length": 16}, VOCAB.parent)
    np.testing.assert_array_equal(short(texts)["input_ids"], open_clip.tokenize(texts, context_length=16).numpy())
    for clean, lowercase in [("whitespace", False), ("canonicalize", True), ("lower", True)]:
        ours = ClipBpeTokenizer(VOCAB, clean=clean, lowercase=lowercase)
        reference = oc_tokenizer.SimpleTokenizer(clean=clean)
        np.testing.assert_array_equal(ours(texts)["input_ids"], reference(texts).numpy(), err_msg=clean)


def test_spec_example_is_open_clip_default():
    spec = {"kind": "clip_bpe", "file": VOCAB.name, "context_length": 77, "lowercase": True, "clean": "whitespace"}
    tok = ClipBpeTokenizer.from_spec(spec, VOCAB.parent)
    texts = ["A Photo of a CAT", "it's &amp; “this”", "", "<start_of_text>x"]
    np.testing.assert_array_equal(tok(texts)["input_ids"], open_clip.tokenize(texts).numpy())
    assert tok.sot_id == 49406 and tok.eot_id == 49407


def test_pretokenizer_classes_match_regex():
    """Every code point falls in the same alternative as with open_clip's regex pattern.

    The only differences allowed: code points this Python's unicodedata does
    not know (category Cn; regex ships newer tables) and U+001C..U+001F
    (str.isspace() but not White_Space; cleaning removes them anyway).
    """
    ours = clip_bpe._pretokenize_re()
    theirs = regex.compile(
        r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|([\p{L}]+)|([\p{N}])|([^\s\p{L}\p{N}]+)""",
        regex.IGNORECASE,
    )
    unexplained = []
    newer = 0
    for cp in range(0x110000):
        c = chr(cp)
        m = theirs.match(c)
        want = "none" if m is None else "L" if m.group(1) else "N" if m.group(2) else "O"
        mine = ours.match(c)
        if mine is None:
            got = "none"
        else:
            category = unicodedata.category(c)[0]
            got = "L" if category == "L" else "N" if category == "N" else "O"
        if got != want:
            if unicodedata.category(c) == "Cn":
                newer += 1
            elif not 0x1C <= cp <= 0x1F:
                unexplained.append((hex(cp), want, got))
    assert not unexplained, unexplained[:20]
    assert newer < 40_000
    for text in [
        "it's",
        "'s'ſ'ſt",
        "<ſtart_of_text>x",
        "<start_of_text><end_of_text>",
        "a\u0345b !\u0345!",
        "'re're 've'm'll'd'x",
        "abc123def",
        "Ⅻ½²①",
        "e\u0301",
        "中文 한국어 العربية",
        "😀!!?",
    ]:
        assert ours.findall(text) == [m.group(0) for m in theirs.finditer(text)], repr(text)


def test_lone_surrogates_are_replaced_like_ftfy(tok):
    texts = ["cat\ud800", "\udfff dog", "\ud83d\ude00"]
    np.testing.assert_array_equal(tok(texts)["input_ids"], open_clip.tokenize(texts).numpy())


def test_small_vocab_falls_back_to_rounds(tmp_path):
    """A merge list whose rules use parts made later is merged in open_clip's rounds, not by the heap."""
    path = tmp_path / "odd.txt.gz"
    # "ab" is used by rule 0 before rule 2 makes it.
    path.write_bytes(gzip.compress(b"header\nab c</w>\nb c</w>\na b\n"))
    tok = ClipBpeTokenizer(path)
    assert not tok._by_heap
    reference = oc_tokenizer.SimpleTokenizer(bpe_path=str(path))
    for text in ["abc", "abcabc", "bc", "aabbc", "cab"]:
        assert tok.encode(text) == reference.encode(text), text
