"""The torch-free Unigram tokenizer must give exactly the ``tokenizers`` library's ids and mask.

The real XLM-R tokenizer.json cannot be downloaded here, so the tests train a
4,000-piece Unigram model with an XLM-R-like pipeline (NFKC plus collapsing
space runs, Metaspace "▁" always prepended, ``<s> $A </s>``, ``<s>``=0
``<pad>``=1 ``</s>``=2 ``<unk>``=3) on multilingual Faker text, then compare
with ``encode_batch`` under truncation and padding to the context length, as
open_clip's HFTokenizer asks for them.
"""

from __future__ import annotations

import copy
import json
import unicodedata

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from clip_onnx.errors import BundleError  # noqa: E402
from clip_onnx.runtime.tokenizers import hf_file, hf_normalizers  # noqa: E402
from clip_onnx.runtime.tokenizers.unigram import UnigramTokenizer  # noqa: E402

try:  # run as `python -m pytest` (repo root on sys.path) or plain `pytest` (tests/ on sys.path)
    from tests.multilingual_corpus import corpus_strings, training_lines
except ImportError:
    from multilingual_corpus import corpus_strings, training_lines

CONTEXT = 77
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    # A Rust String cannot hold a lone surrogate: tokenizers refuses those (tested below).
    strings = [t for t in corpus_strings(seed=2) if not _has_surrogate(t)]
    strings += ["[x]", "a [x] b", "a[x]b", "<mask>", " <mask>", "a  <mask> b", "\t<mask>x", "[X]", "[ x ]"]
    assert len(strings) >= 10_000
    return strings


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """The trained tokenizer.json as a dict (training takes about 5 s)."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=4000, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(training_lines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    data = json.loads(tok.to_str())
    # XLM-R's last id is <mask>: in the vocab with score 0, and an added token that eats the space before it.
    data["model"]["vocab"].append(["<mask>", 0.0])
    data["added_tokens"].append(
        {
            "id": 4000,
            "content": "<mask>",
            "single_word": False,
            "lstrip": True,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    return data


def save(data: dict, directory, name="tokenizer.json"):
    path = directory / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def reference(data: dict, texts: list[str], context: int = CONTEXT, pad_id: int = 1):
    tok = Tokenizer.from_str(json.dumps(data))
    tok.enable_truncation(max_length=context)
    tok.enable_padding(length=context, pad_id=pad_id, pad_token="<pad>")
    encodings = tok.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask, encodings


def first_mismatches(texts, expected, got, encodings=None, limit=5) -> str:
    bad = [i for i in range(len(texts)) if list(expected[i]) != list(got[i])]
    lines = []
    for i in bad[:limit]:
        e, g = [int(x) for x in expected[i]], [int(x) for x in got[i]]
        at = next(k for k, (x, y) in enumerate(zip(e, g, strict=False)) if x != y)
        pieces = f"\n    pieces:     {encodings[i].tokens[max(0, at - 3) : at + 8]}" if encodings else ""
        lines.append(
            f"  {texts[i]!r:.120}\n    first difference at {at}{pieces}\n"
            f"    tokenizers: {e[max(0, at - 3) : at + 8]}\n    ours:       {g[max(0, at - 3) : at + 8]}"
        )
    return f"{len(bad)} of {len(texts)} texts differ, first ones:\n" + "\n".join(lines)


def assert_same(data, texts, tmp_path, context=CONTEXT, **options):
    pad = {"pad_id": options["pad_id"]} if "pad_id" in options else {}
    ids, mask, encodings = reference(data, texts, context, **pad)
    tok = UnigramTokenizer(save(data, tmp_path), context_length=context, **options)
    got = tok(texts)
    assert set(got) == {"input_ids", "attention_mask"}
    assert got["input_ids"].dtype == np.int64 and got["input_ids"].shape == (len(texts), context)
    assert got["attention_mask"].dtype == np.int64 and got["attention_mask"].shape == (len(texts), context)
    assert np.array_equal(got["input_ids"], ids), first_mismatches(texts, ids, got["input_ids"], encodings)
    assert np.array_equal(got["attention_mask"], mask), first_mismatches(texts, mask, got["attention_mask"])
    return tok, ids


def test_special_tokens_have_xlmr_ids(trained):
    vocab = trained["model"]["vocab"]
    assert [piece for piece, _ in vocab[:4]] == SPECIALS
    assert trained["model"]["unk_id"] == 3 and len(vocab) == 4001 and vocab[4000] == ["<mask>", 0.0]


def test_matches_tokenizers_on_corpus(trained, corpus, tmp_path):
    tok, ids = assert_same(trained, corpus, tmp_path)
    # Warm caches give the same answer.
    np.testing.assert_array_equal(tok(corpus[:2000])["input_ids"], ids[:2000])
    # The corpus reaches the interesting cases.
    lengths = (ids != 1).sum(axis=1)
    assert (lengths == 2).sum() > 50, "too few texts that encode to <s></s> only"
    assert (lengths == CONTEXT).sum() > 500, "too few texts truncated to the context length"
    assert (ids[:, -1] == 2).sum() > 500
    assert ((ids[:, 1:] == 3).any(axis=1)).sum() > 500, "too few texts with unknown characters"
    assert ((ids[:, 1:-1] == 0).any(axis=1)).sum() > 10, "no literal <s> in the corpus"


VARIANTS = {
    # Older files: Metaspace without prepend_scheme.
    "legacy_metaspace": lambda d: d.update(
        pre_tokenizer={"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}
    ),
    "prepend_first_no_split": lambda d: d["pre_tokenizer"].update(prepend_scheme="first", split=False),
    "prepend_never": lambda d: d["pre_tokenizer"].update(prepend_scheme="never"),
    "nfd_strip_accents_lowercase_strip": lambda d: d.update(
        normalizer={
            "type": "Sequence",
            "normalizers": [
                {"type": "NFD"},
                {"type": "StripAccents"},
                {"type": "Lowercase"},
                {"type": "Strip", "strip_left": True, "strip_right": True},
                {"type": "Replace", "pattern": {"String": "  "}, "content": " "},
                {"type": "NFC"},
            ],
        }
    ),
    "nfkd_right_strip": lambda d: d.update(
        normalizer={
            "type": "Sequence",
            "normalizers": [{"type": "NFKD"}, {"type": "Strip", "strip_left": False, "strip_right": True}],
        }
    ),
    # Llama-style: no pre-tokenizer, the normalizer marks the spaces.
    "prepend_replace_no_pretokenizer": lambda d: d.update(
        pre_tokenizer=None,
        normalizer={
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "\u2581"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
            ],
        },
    ),
    "no_normalizer_roberta_processing": lambda d: d.update(
        normalizer=None,
        post_processor={
            "type": "RobertaProcessing",
            "sep": ["</s>", 2],
            "cls": ["<s>", 0],
            "trim_offsets": True,
            "add_prefix_space": True,
        },
    ),
    "no_post_processor": lambda d: d.update(post_processor=None),
    # What transformers 5's XLMRobertaTokenizer writes (no charsmap: no normalizer).
    "whitespace_split_metaspace": lambda d: d.update(
        normalizer=None,
        pre_tokenizer={
            "type": "Sequence",
            "pretokenizers": [
                {"type": "WhitespaceSplit"},
                {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
            ],
        },
    ),
    "whitespace_split_metaspace_first": lambda d: d.update(
        pre_tokenizer={
            "type": "Sequence",
            "pretokenizers": [
                {"type": "WhitespaceSplit"},
                {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True},
            ],
        }
    ),
    "added_tokens_rstrip_and_normalized": lambda d: d["added_tokens"].extend(
        [
            {
                "id": 4001,
                "content": "[x]",
                "single_word": False,
                "lstrip": False,
                "rstrip": True,
                "normalized": True,
                "special": False,
            },
            {
                "id": 4002,
                "content": "ｗｏｒｌｄ",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": True,
                "special": False,
            },
            {
                "id": 4003,
                "content": "<S>",
                "single_word": False,
                "lstrip": True,
                "rstrip": True,
                "normalized": False,
                "special": True,
            },
        ]
    ),
    "byte_fallback": lambda d: (
        d["model"].update(byte_fallback=True),
        d["model"]["vocab"].extend([f"<0x{b:02X}>", -20.0] for b in range(256)),
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pipeline_variants(trained, corpus, tmp_path, variant):
    data = copy.deepcopy(trained)
    VARIANTS[variant](data)
    texts = corpus[::6] + corpus[-9:]
    assert_same(data, texts, tmp_path)


@pytest.mark.parametrize("context", [2, 5, 16, 128])
def test_context_lengths(trained, corpus, tmp_path, context):
    assert_same(trained, corpus[::13], tmp_path, context=context)


def test_from_spec_and_pad_override(trained, corpus, tmp_path):
    save(trained, tmp_path)
    tok = UnigramTokenizer.from_spec({"kind": "unigram", "file": "tokenizer.json", "context_length": 77}, tmp_path)
    texts = corpus[:200]
    ids, mask, _ = reference(trained, texts)
    got = tok(texts)
    np.testing.assert_array_equal(got["input_ids"], ids)
    np.testing.assert_array_equal(got["attention_mask"], mask)
    assert tok.pad_id == 1 and tok.unk_id == 3
    assert_same(trained, texts, tmp_path, pad_id=7)


def test_clean_option_is_open_clip_hf_tokenizer(trained, corpus, tmp_path):
    """clean="whitespace": open_clip's HFTokenizer cleaning, then the HF tokenizer."""
    import ftfy
    from open_clip import tokenizer as oc_tokenizer

    texts = [t for t in corpus[::5] if ftfy.fix_text(t) == ftfy.fix_text(t, fix_encoding=False)]  # see clip_bpe
    ids, mask, _ = reference(trained, [oc_tokenizer._clean_whitespace(t) for t in texts])
    got = UnigramTokenizer(save(trained, tmp_path), clean="whitespace")(texts)
    np.testing.assert_array_equal(got["input_ids"], ids)
    np.testing.assert_array_equal(got["attention_mask"], mask)


def test_open_clip_hf_tokenizer_end_to_end(trained, corpus, tmp_path):
    """open_clip's HFTokenizer with transformers' XLM-R class, saved into a bundle and run by us.

    transformers 5 rebuilds the XLM-R pipeline in its class (WhitespaceSplit +
    Metaspace, a Precompiled normalizer only when the file has a charsmap) and
    holds the scores as Python's json parsed them, so the file it saves, read
    with exact scores, is what a bundle must carry. (Read as tokenizers reads
    files, one score in seven is an ulp off, and the trainer's many tied scores
    then flip a segmentation now and then.)
    """
    import ftfy
    import transformers  # noqa: F401  (HFTokenizer loads the XLM-R class from it)
    from open_clip import tokenizer as oc_tokenizer

    source, bundle = tmp_path / "source", tmp_path / "bundle"
    source.mkdir()
    save(trained, source)
    config = {
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
    (source / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    hf = oc_tokenizer.HFTokenizer(str(source), context_length=CONTEXT, clean="whitespace")
    hf.save_pretrained(str(bundle))
    ours = UnigramTokenizer.from_spec(
        {
            "kind": "unigram",
            "file": "tokenizer.json",
            "context_length": CONTEXT,
            "clean": "whitespace",
            "scores": "exact",
        },
        bundle,
    )
    texts = [t for t in corpus[::4] if ftfy.fix_text(t) == ftfy.fix_text(t, fix_encoding=False)]  # see clip_bpe
    expected = hf(texts).numpy()
    got = ours(texts)
    assert np.array_equal(got["input_ids"], expected), first_mismatches(texts, expected, got["input_ids"])
    # open_clip's HF text encoder masks by ids != pad id, which also hides a literal "<pad>" typed in
    # the text; the mask here is tokenizers' (1 for every token before the padding) and differs just there.
    literal_pad = (got["attention_mask"] == 1) & (expected == 1)
    np.testing.assert_array_equal(got["attention_mask"] - literal_pad, (expected != 1).astype(np.int64))


def test_scores_are_read_as_tokenizers_reads_them(trained):
    """Vocab scores parse to the very floats tokenizers holds (its JSON reader rounds twice)."""
    text = json.dumps(trained)
    held = json.loads(Tokenizer.from_str(text).to_str())["model"]["vocab"]
    exact = json.loads(text)["model"]["vocab"]
    ours = json.loads(text, parse_float=hf_file.serde_json_f64)["model"]["vocab"]
    assert [s for _, s in ours] == [s for _, s in held]
    assert sum(a[1] != b[1] for a, b in zip(exact, held, strict=False)) > 100  # Python's float() would be off here
    literals = [
        "0.5",
        "-9.047938332676495",
        "1e-7",
        "-1.5E+3",
        "123456789012345678901.5",
        "-0.0",
        "0.12345678901234567891234",
        "2.2250738585072014e-308",
        "1e-400",
        "7e22",
        "12345678901234567890e-10",
        "-3.4028234663852886e+38",
        "-18446744073709551615.25",
        "-18446744073709551616.75",
    ]
    vocab = ", ".join(['["<unk>", 0.0]'] + [f'["p{i}", {v}]' for i, v in enumerate(literals)])
    text = '{"model": {"type": "Unigram", "unk_id": 0, "vocab": [' + vocab + "]}}"
    held = json.loads(Tokenizer.from_str(text).to_str())["model"]["vocab"][1:]
    assert [hf_file.serde_json_f64(v) for v in literals] == [s for _, s in held]


def test_exact_scores_are_the_floats_of_the_literals(trained, tmp_path):
    exact = UnigramTokenizer(save(trained, tmp_path), scores="exact")
    serde = UnigramTokenizer(save(trained, tmp_path))
    literal = {p: float(v) for p, v in json.loads(json.dumps(trained))["model"]["vocab"]}
    assert all(exact._pieces[p][1] == literal[p] for p in exact._pieces)
    assert sum(serde._pieces[p][1] != literal[p] for p in serde._pieces) > 100


def test_legacy_normalization_table_is_current():
    """hf_normalizers._LEGACY_UNASSIGNED is exactly where tokenizers' Unicode tables and this Python's differ."""
    forms = {name: getattr(normalizers, name)() for name in ("NFC", "NFD", "NFKC", "NFKD")}
    differ = set()
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if unicodedata.decomposition(c) or unicodedata.combining(c):
            if forms["NFKD"].normalize_str(c) != unicodedata.normalize("NFKD", c):
                differ.add(cp)
            if unicodedata.combining(c) > 1:
                text = "a" + c + "\u0334"
                if forms["NFD"].normalize_str(text) != unicodedata.normalize("NFD", text):
                    differ.add(cp)
    table = {cp for a, b in hf_normalizers._LEGACY_UNASSIGNED for cp in range(a, b + 1)}
    assert differ == table, sorted(hex(cp) for cp in differ ^ table)
    for name, form in forms.items():
        normalize = hf_normalizers._unicode_normalizer(name)
        for cp in sorted(table):
            for text in (chr(cp), "e\u0301" + chr(cp) + "\u0301a\u0323\u0307", "\u1100" + chr(cp) + "\u1161"):
                assert normalize(text) == form.normalize_str(text), (name, hex(cp))


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d.update(normalizer={"type": "Precompiled", "precompiled_charsmap": "AAAA"}), "too short"),
        (lambda d: d.update(normalizer={"type": "BertNormalizer"}), "'BertNormalizer'"),
        (lambda d: d["normalizer"]["normalizers"].append({"type": "BertNormalizer"}), "'BertNormalizer'"),
        (lambda d: d.update(normalizer={"type": "Replace", "pattern": {"Regex": "(?<x"}, "content": ""}), "Regex"),
        (lambda d: d.update(pre_tokenizer={"type": "ByteLevel"}), "'ByteLevel'"),
        (
            lambda d: d.update(
                pre_tokenizer={"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}, {"type": "Metaspace"}]}
            ),
            "'Whitespace'",
        ),
        (lambda d: d.update(post_processor={"type": "ByteLevel"}), "'ByteLevel'"),
        (lambda d: d["added_tokens"].append({"id": 9, "content": "<x>", "single_word": True}), "single_word"),
        (lambda d: d["pre_tokenizer"].update(prepend_scheme="sometimes"), "sometimes"),
    ],
)
def test_unsupported_pipeline_raises_bundle_error(trained, tmp_path, change, fragment):
    data = copy.deepcopy(trained)
    change(data)
    with pytest.raises(BundleError, match=fragment):
        UnigramTokenizer(save(data, tmp_path))
