"""The contract every runtime tokenizer keeps, one parameterised test per clause, on files written without libraries.

What each algorithm must compute (ids identical to youtokentome, open_clip,
transformers or tokenizers) is checked against those libraries in
tests/export/test_<algorithm>.py; what a caller may rely on whatever the
algorithm (thread safety, fresh results, typed errors that name the bad value)
is checked here, under the runtime-only install too.
"""

from __future__ import annotations

import gzip
import sys
import threading
from dataclasses import dataclass

import pytest

from clip_onnx.errors import BundleError, InputError
from clip_onnx.runtime.tokenizers import TOKENIZERS, load_tokenizer, tokenizer_class
from tests.tokenizer_files import WRITERS


@dataclass(frozen=True)
class Case:
    """What differs between the algorithms: their texts, their file format and their own spec options."""

    texts: tuple[str, ...]
    malformed: tuple[tuple[bytes, str], ...]  # file contents -> a fragment of the BundleError
    bad_options: tuple[tuple[dict, str], ...]  # spec options -> a fragment of the BundleError
    refuses_lone_surrogates: bool = True  # clip_bpe replaces them, as ftfy does before open_clip tokenizes


CASES = {
    "yttm_bpe": Case(
        texts=("кошка на окне", "Красный круг!", "a photo of a cat", "", "  два   пробела "),
        malformed=((b"", ""), (b"3 1\n9601 4\n", ""), (b"not a model\n", ""), (b"1 0\n97 4\n1 0 2 3\n", "")),
        bad_options=(({"lowercase": "yes"}, "lowercase"), ({"pad_id": -1}, "pad_id"), ({"bos_id": "2"}, "bos_id")),
    ),
    "clip_bpe": Case(
        texts=("a photo of the cat", "A PHOTO, of a Cat!", "кошка", "中文", "", "😀!!?"),
        malformed=(
            (b"not gzip at all", "gzip"),
            (gzip.compress(b"header\n")[:-6], "gzip"),
            (gzip.compress(b"header only\n"), "no merge rules"),
            (gzip.compress(b"header\ni n\nt h e\n"), "line 3"),
            (gzip.compress(b"header\n\xff\xfe\n"), "UTF-8"),
        ),
        bad_options=(({"clean": "bogus"}, "bogus"), ({"lowercase": "yes"}, "lowercase")),
        refuses_lone_surrogates=False,
    ),
    "wordpiece": Case(
        texts=("the cats singing", "кошка и коты", "中文猫", "", "Hello, WORLD!"),
        malformed=(
            (b"", r"\[UNK\], \[CLS\], \[SEP\], \[PAD\]"),
            (b"[PAD]\n[UNK]\n[CLS]\nhello\n", r"\[SEP\]"),
            (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xff\xfe\n", "not UTF-8"),
        ),
        bad_options=(
            ({"lowercase": "yes"}, "lowercase"),
            ({"strip_accents": 1}, "strip_accents"),
            ({"tokenize_chinese_chars": None}, "tokenize_chinese_chars"),
            ({"max_input_chars_per_word": 0}, "max_input_chars_per_word"),
        ),
    ),
    "unigram": Case(
        texts=("the cat singing", "кот и мир", "中", "", "THE  CAT"),
        malformed=(
            (b"", "not valid JSON"),
            (b"{not json", "not valid JSON"),
            (b"[1, 2]", "JSON object"),
            (b"{}", "no 'model'"),
            (b'{"model": {"type": "BPE", "vocab": {}}}', "'BPE'"),
            (b'{"model": {"type": "Unigram", "vocab": []}}', "no vocab"),
            (b'{"model": {"type": "Unigram", "vocab": [["a"]]}}', "entry #0"),
            (b'{"model": {"type": "Unigram", "vocab": [["a", -1.0]], "unk_id": 5}}', "unk_id"),
            (b'{"model": "\xe9"}', "UTF-8"),
        ),
        bad_options=(
            ({"context_length": "77"}, "context_length"),
            ({"clean": "bogus"}, "bogus"),
            ({"scores": "rounded"}, "rounded"),
            ({"scores": ["exact"]}, "exact"),
        ),
    ),
}


def test_every_registered_tokenizer_has_a_case():
    assert set(CASES) == set(WRITERS) == set(TOKENIZERS)


@pytest.fixture(params=sorted(TOKENIZERS))
def kind(request) -> str:
    return request.param


@pytest.fixture
def path(kind, tmp_path):
    return WRITERS[kind](tmp_path)


def test_feed_is_int64_rows_padded_to_the_context(kind, path):
    tok = load_tokenizer({"kind": kind, "file": path.name, "context_length": 16}, path.parent)
    assert type(tok) is tokenizer_class(kind) and tok.context_length == 16
    texts = list(CASES[kind].texts)
    feed = tok(texts)
    assert feed["input_ids"].dtype.name == "int64" and feed["input_ids"].shape == (len(texts), 16)
    if "attention_mask" in feed:
        mask = feed["attention_mask"]
        assert mask.shape == (len(texts), 16) and set(mask.ravel().tolist()) <= {0, 1}
        assert (feed["input_ids"][mask == 0] == tok.pad_id).all()
    for text, row in zip(texts, feed["input_ids"], strict=True):
        assert row.tolist() == tok([text])["input_ids"][0].tolist(), repr(text)


def test_threads_share_one_tokenizer(kind, path):
    texts = [f"{text} {i} {text[::-1]}" for i in range(300) for text in CASES[kind].texts]
    expected = [tokenizer_class(kind)(path).encode(t) for t in texts]
    tok = tokenizer_class(kind)(path)
    failures = []

    def work(offset):
        # Rotated, so the threads fill and read the caches in different orders.
        order = list(range(offset, len(texts))) + list(range(offset))
        if any(tok.encode(texts[i]) != expected[i] for i in order):
            failures.append(offset)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=work, args=(i * len(texts) // 4,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old)
    assert not failures


def test_encode_returns_a_fresh_list(kind, path):
    tok = tokenizer_class(kind)(path)
    first = tok.encode(CASES[kind].texts[0])
    first.append(-5)
    assert tok.encode(CASES[kind].texts[0]) == first[:-1]


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (["cat", 42], "42"),
        (["cat", None], "None"),
        ([b"bytes"], "bytes"),
        ([], "empty"),
        ("a bare string", "a bare string"),
        (b"cat", "single bytes"),
        (42, "int"),
    ],
)
def test_bad_texts_raise_input_error(kind, path, bad, fragment):
    with pytest.raises(InputError, match=fragment):
        tokenizer_class(kind)(path)(bad)


def test_encode_refuses_what_is_not_one_text(kind, path):
    with pytest.raises(InputError, match="list"):
        tokenizer_class(kind)(path).encode(["cat"])


def test_lone_surrogates(kind, path):
    tok = tokenizer_class(kind)(path)
    if CASES[kind].refuses_lone_surrogates:
        with pytest.raises(InputError, match="not valid Unicode"):
            tok(["cat\ud800"])
    else:
        assert tok(["cat\ud800"])["input_ids"].shape[0] == 1


def test_missing_file_raises_bundle_error(kind, path, tmp_path):
    with pytest.raises(BundleError, match="nope"):
        tokenizer_class(kind)(tmp_path / "nope" / path.name)
    with pytest.raises(BundleError, match="absent.file"):
        tokenizer_class(kind).from_spec({"kind": kind, "file": "absent.file"}, tmp_path)


def test_malformed_file_raises_bundle_error_naming_it(kind, tmp_path):
    for number, (content, fragment) in enumerate(CASES[kind].malformed):
        broken = tmp_path / f"broken{number}.file"
        broken.write_bytes(content)
        with pytest.raises(BundleError, match=fragment or None) as info:
            tokenizer_class(kind)(broken)
        assert broken.name in str(info.value), content


def test_bad_spec_raises_bundle_error(kind, path):
    other = next(k for k in sorted(TOKENIZERS) if k != kind)
    shared = [
        ({"kind": other, "file": path.name}, other),
        ({"kind": kind}, "file"),
        ({"kind": kind, "file": f"../{path.name}"}, rf"\.\./{path.name}"),
        ({"kind": kind, "file": f"/etc/{path.name}"}, f"/etc/{path.name}"),
        ({"kind": kind, "file": path.name, "context_length": 1}, "context_length"),
        ({"kind": kind, "file": path.name, "context_length": True}, "context_length"),
    ]
    own = [({"kind": kind, "file": path.name, **options}, fragment) for options, fragment in CASES[kind].bad_options]
    for spec, fragment in shared + own:
        with pytest.raises(BundleError, match=fragment):
            tokenizer_class(kind).from_spec(spec, path.parent)
            pytest.fail(f"{spec} was accepted")
