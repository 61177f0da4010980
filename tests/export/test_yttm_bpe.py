"""The pure-Python youtokentome encoder must give exactly the library's ids."""

from __future__ import annotations

import numpy as np
import pytest
import youtokentome as yttm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip_onnx.runtime.tokenizers.yttm_bpe import YttmBpeTokenizer

try:  # run as `python -m pytest` (repo root on sys.path) or plain `pytest` (tests/ on sys.path)
    from tests.corpus import prompt_strings, training_text
except ImportError:
    from corpus import prompt_strings, training_text

CONTEXT = 77
# (vocab size, character coverage): a realistic vocabulary, and a small one whose
# char table also drops rare training characters, so merges and unks differ.
MODELS = [(4000, 1.0), (300, 0.995)]


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    strings = prompt_strings()
    assert len(strings) >= 10_000
    return strings


@pytest.fixture(scope="session")
def training_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("yttm") / "train.txt"
    path.write_text(training_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session", params=MODELS, ids=[f"vocab{v}" for v, _ in MODELS])
def model(request, training_file):
    vocab_size, coverage = request.param
    path = training_file.parent / f"bpe_{vocab_size}.model"
    yttm.BPE.train(data=str(training_file), model=str(path), vocab_size=vocab_size, coverage=coverage, n_threads=1)
    return path, yttm.BPE(str(path))


def reference_ids(bpe, texts: list[str]) -> list[list[int]]:
    return bpe.encode(texts, output_type=yttm.OutputType.ID, dropout_prob=0.0)


def ruclip_encode_text(bpe, text: str) -> list[int]:
    """RuCLIPProcessor.encode_text, with the real library, as a plain list."""
    tokens = reference_ids(bpe, [text.lower()])[0][: CONTEXT - 2]
    tokens = [2] + tokens + [3]
    return tokens + [0] * (CONTEXT - len(tokens))


def first_mismatches(texts, expected, got, limit=5) -> str:
    bad = [(t, e, g) for t, e, g in zip(texts, expected, got, strict=True) if list(e) != list(g)]
    shown = "\n".join(f"  {t!r:.80}\n    yttm: {list(e)[:20]}\n    ours: {list(g)[:20]}" for t, e, g in bad[:limit])
    return f"{len(bad)} of {len(texts)} texts differ, first ones:\n{shown}"


def test_encode_matches_youtokentome(model, corpus):
    path, bpe = model
    tok = YttmBpeTokenizer(path)
    expected = reference_ids(bpe, corpus)
    got = [tok.encode(t) for t in corpus]
    assert got == expected, first_mismatches(corpus, expected, got)
    # The corpus must actually reach the interesting cases.
    assert any(1 in ids for ids in expected), "no unknown characters in the corpus"
    assert any(len(ids) > 200 for ids in expected), "no long texts in the corpus"
    assert [] in expected, "no text that encodes to nothing"


def test_call_matches_ruclip_processor(model, corpus):
    path, bpe = model
    tok = YttmBpeTokenizer(path)
    expected = np.array([ruclip_encode_text(bpe, t) for t in corpus], dtype=np.int64)
    feed = tok(corpus)
    assert set(feed) == {"input_ids"}  # the model takes no attention mask
    got = feed["input_ids"]
    assert got.dtype == np.int64 and got.shape == (len(corpus), CONTEXT)
    rows = np.flatnonzero((got != expected).any(axis=1))
    assert rows.size == 0, first_mismatches([corpus[i] for i in rows], expected[rows], got[rows])
    # Warm cache must give the same answer.
    np.testing.assert_array_equal(tok(corpus[:500])["input_ids"], expected[:500])


def test_from_spec_and_options(model, corpus):
    path, bpe = model
    spec = {
        "kind": "yttm_bpe",
        "file": path.name,
        "context_length": 16,
        "bos_id": 2,
        "eos_id": 3,
        "pad_id": 0,
        "lowercase": False,
    }
    tok = YttmBpeTokenizer.from_spec(spec, path.parent)
    texts = corpus[:300]
    for text, row in zip(texts, tok(texts)["input_ids"], strict=True):
        ids = reference_ids(bpe, [text])[0][:14]
        assert list(row) == [2, *ids, 3] + [0] * (14 - len(ids)), repr(text)


# Any code point but lone surrogates (which the tokenizer refuses, and UTF-8 cannot carry to the library).
VALID_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(VALID_TEXT, min_size=1, max_size=4))
def test_any_valid_text_gets_ruclips_ids(model, texts):
    """Hypothesis on top of the corpus: valid text is always answered, with RuCLIPProcessor's ids."""
    path, bpe = model
    got = YttmBpeTokenizer(path)(texts)["input_ids"]
    expected = np.array([ruclip_encode_text(bpe, t) for t in texts], dtype=np.int64)
    np.testing.assert_array_equal(got, expected, err_msg=repr(texts))
