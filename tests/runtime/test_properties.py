"""Property tests: the tokenizers, the preprocessor and the manifest reader on arbitrary input.

On arbitrary input each property is "a well-formed result or our typed error, never anything else";
where the input is valid (text without lone surrogates, a uint8 picture, a manifest holding the
exported values) a refusal fails, and the answer must be the right one: a uniform picture is its
colour, an array and its PNG give the same pixels, a re-serialised manifest gives eager PyTorch's
vectors. What each tokenizer must compute is checked against its reference library, with Hypothesis
too, in tests/export/test_<algorithm>.py. The default profile keeps the whole file to a few seconds;
`-m slow` runs the same properties with many more examples.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from PIL import Image

from clip_onnx.bundle import MANIFEST, read_bundle
from clip_onnx.errors import BundleError, ClipOnnxError, InputError
from clip_onnx.runtime.preprocess import ImagePreprocessor, PreprocessSpec
from clip_onnx.runtime.tokenizers import TOKENIZERS as TOKENIZER_CLASSES
from clip_onnx.runtime.tokenizers import tokenizer_class
from tests.references import eager_references
from tests.tokenizer_files import WRITERS

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Every code point, lone surrogates, NUL and combining marks included (st.characters leaves out Cs by default).
ANY_CHAR = st.characters(codec=None, exclude_categories=())
TRICKY = st.sampled_from(
    [
        "\x00",
        "\ud800",
        "\udfff",
        "\u0301",
        "\u200d",
        "\ufeff",
        "\U0001f600",
        "\u0130",
        "ß",
        "\u2581",
        "{}",
        "<pad>",
        "[CLS]",
        "<|endoftext|>",
        " ",
        "\t\n",
        "ё",
    ]
)
TEXT = st.lists(st.one_of(ANY_CHAR, TRICKY), max_size=20).map("".join)
TEXTS = st.lists(TEXT, min_size=1, max_size=4)


# --- tokenizers -------------------------------------------------------------------------------------------------


def _open(kind: str, tmp: Path):
    """A tokenizer of ``kind`` on a small file from tests/tokenizer_files.py (context 24 where it is an option)."""
    options = {} if kind in ("yttm_bpe", "clip_bpe") else {"context_length": 24}
    return tokenizer_class(kind)(WRITERS[kind](tmp), **options)


@pytest.fixture(scope="module", params=sorted(TOKENIZER_CLASSES))
def tokenizer(request, tmp_path_factory):
    return _open(request.param, tmp_path_factory.mktemp(request.param))


def _valid_texts(tok, texts: list[str]) -> bool:
    """Texts every tokenizer must answer: strings, and for all but clip_bpe (which replaces them) no lone surrogate."""
    return tok.kind == "clip_bpe" or not any(0xD800 <= ord(c) <= 0xDFFF for t in texts for c in t)


def check_tokenizer(tok, texts: list[str]) -> None:
    try:
        first = tok(texts)
    except InputError:
        assert not _valid_texts(tok, texts), f"{tok.kind} refused valid texts {texts!r}"
        with pytest.raises(InputError):  # deterministic refusals too
            tok(texts)
        return
    assert isinstance(first, dict) and "input_ids" in first, type(first)
    for name, array in first.items():
        assert isinstance(array, np.ndarray) and array.dtype == np.int64, (name, array.dtype)
        assert array.ndim == 2 and array.shape[0] == len(texts) and array.shape[1] >= 2, (name, array.shape)
    again = tok(list(texts))
    one_by_one = [tok([t]) for t in texts]
    for name, array in first.items():
        np.testing.assert_array_equal(again[name], array)
        np.testing.assert_array_equal(np.concatenate([o[name] for o in one_by_one]), array)


@FAST
@given(texts=TEXTS)
def test_tokenizers_give_int64_ids_or_input_error_and_are_deterministic(tokenizer, texts):
    check_tokenizer(tokenizer, texts)


@pytest.mark.slow
@SLOW
@given(texts=TEXTS)
def test_tokenizers_on_many_more_texts(tokenizer, texts):
    check_tokenizer(tokenizer, texts)


@pytest.mark.parametrize("bad", [None, 5, b"bytes", [b"x"], [None], ["ok", 3.5], "a bare string", []])
def test_tokenizers_refuse_non_text_with_input_error(tokenizer, bad):
    with pytest.raises(InputError):
        tokenizer(bad)


# --- preprocessor -----------------------------------------------------------------------------------------------

PREPROCESS = ImagePreprocessor(PreprocessSpec(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
SHAPES = npst.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
ARRAYS = st.one_of(
    npst.arrays(npst.scalar_dtypes(), SHAPES),
    npst.arrays(np.uint8, npst.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=9)),
)
# Real signatures, so the fuzzing reaches past Pillow's format detection into the decoders.
MAGIC = st.sampled_from(
    [
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0",
        b"GIF89a",
        b"BM",
        b"II*\x00",
        b"MM\x00*",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"P6\n4 4\n255\n",
        b"\x00\x00\x01\x00",
        b"%!PS-Adobe-3.0 EPSF",
    ]
)


def _valid_array(item) -> bool:
    """What load_image documents it takes as an array: uint8, HxW, HxWx1, HxWx3 or HxWx4, no side zero."""
    return (
        isinstance(item, np.ndarray)
        and item.dtype == np.uint8
        and (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3, 4)))
        and min(item.shape[:2]) > 0
    )


def check_preprocess(item, valid: bool | None = None) -> np.ndarray | None:
    """The preprocessed item, or None where it is refused; ``valid`` (default: a valid array) must be answered."""
    valid = _valid_array(item) if valid is None else valid
    try:
        out = PREPROCESS([item])
    except InputError as exc:
        assert not valid, f"a valid picture ({type(item).__name__}) was refused: {exc}"
        return None
    assert out.shape == (1, 3, 16, 16) and out.dtype == np.float32 and np.isfinite(out).all()
    if _valid_array(item):  # the same picture, encoded as PNG and decoded by Pillow, gives the same pixels
        buffer = io.BytesIO()
        Image.fromarray(item[:, :, 0] if item.ndim == 3 and item.shape[2] == 1 else item).save(buffer, "PNG")
        np.testing.assert_array_equal(PREPROCESS([buffer.getvalue()]), out)
    return out


@FAST
@given(array=ARRAYS)
def test_preprocessor_on_arrays_of_every_dtype_and_shape(array):
    check_preprocess(array)


@FAST
@given(
    colour=st.tuples(*[st.integers(0, 255)] * 3),
    size=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    channels=st.sampled_from([3, 4]),
)
def test_a_uniform_picture_of_any_size_is_its_colour(colour, size, channels):
    """Cropping and resizing a uniform picture changes nothing: every output pixel is (c / 255 - mean) / std."""
    picture = np.empty((*size, channels), np.uint8)
    picture[...] = (*colour, 255)[:channels]
    out = PREPROCESS([picture])[0]
    expected = (np.array(colour, np.float64) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None], out.shape), rtol=0, atol=1e-6)


@pytest.fixture()
def small_bomb_limit(monkeypatch):
    # Random headers claim sizes up to the limit, and Pillow allocates before it finds the data missing.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1 << 20)


@FAST
@given(data=st.tuples(MAGIC, st.binary(max_size=600)).map(b"".join))
def test_preprocessor_on_arbitrary_bytes(small_bomb_limit, data):
    check_preprocess(data)


@FAST
@given(
    mode=st.sampled_from(sorted(Image.MODES)),
    size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    seed=st.integers(0, 2**16),
)
def test_preprocessor_on_encoded_images_of_every_mode(mode, size, seed):
    img = Image.frombytes(
        mode, size, np.random.default_rng(seed).bytes(size[0] * size[1] * 8)[: len(Image.new(mode, size).tobytes())]
    )
    # Random bytes are a valid picture in every mode but I and F, whose random values fall outside
    # 0..65535 and 0..255 (or are NaN): those may be refused, the others must be embedded.
    valid = mode not in ("I", "F")
    direct = check_preprocess(img, valid)
    for fmt in ("PNG", "TIFF"):
        buffer = io.BytesIO()
        try:
            img.save(buffer, fmt)
        except (OSError, ValueError, KeyError):  # the format cannot hold this mode
            continue
        decoded = check_preprocess(buffer.getvalue(), valid and Image.open(buffer).mode == mode)
        if direct is not None and decoded is not None and Image.open(buffer).mode == mode:
            np.testing.assert_array_equal(decoded, direct)  # a lossless file of the same mode: the same picture


@pytest.mark.slow
@SLOW
@given(data=st.tuples(MAGIC, st.binary(max_size=4000)).map(b"".join), array=ARRAYS)
def test_preprocessor_on_many_more_inputs(small_bomb_limit, data, array):
    check_preprocess(data)
    check_preprocess(array)


# --- manifest reader --------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, tiny_bundle) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("fuzzed") / "b"))


@pytest.fixture(scope="module")
def good_manifest(bundle_dir) -> dict:
    return json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8"))


def _paths(obj, prefix=()):
    """Every (path of keys/indices) into a JSON document, the root included."""
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _replace(doc, path, value):
    if not path:
        return value
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def check_reader(directory: Path, text: str) -> None:
    (directory / MANIFEST).write_text(text, encoding="utf-8")
    try:
        bundle = read_bundle(directory, verify=False)
    except BundleError:
        return
    from clip_onnx.runtime import ClipModel

    try:  # a manifest the reader accepts must load, or be refused with a typed error
        ClipModel(bundle)
    except ClipOnnxError:
        pass


def _shuffled(doc, rng):
    """``doc`` with every object's keys in another order: the same manifest to any JSON reader."""
    if isinstance(doc, dict):
        keys = list(doc)
        rng.shuffle(keys)
        return {k: _shuffled(doc[k], rng) for k in keys}
    return [_shuffled(v, rng) for v in doc] if isinstance(doc, list) else doc


@settings(FAST, max_examples=15)
@given(rng=st.randoms(use_true_random=False), indent=st.sampled_from([None, 0, 1, "\t"]), ascii=st.booleans())
def test_the_same_manifest_written_any_way_loads_and_gives_eager_pytorchs_vectors(
    bundle_dir, good_manifest, rng, indent, ascii
):
    from clip_onnx.runtime import ClipModel

    text = json.dumps(_shuffled(good_manifest, rng), indent=indent, ensure_ascii=ascii)
    (bundle_dir / MANIFEST).write_text(text, encoding="utf-8")
    eager = eager_references(bundle_dir)
    got = ClipModel(read_bundle(bundle_dir, verify=False)).encode_text(eager.texts)
    assert np.sum(got * eager.textual, axis=1).min() >= 0.99999


@FAST
@given(doc=JSON)
def test_manifest_reader_on_arbitrary_json_raises_only_bundle_error(bundle_dir, doc):
    check_reader(bundle_dir, json.dumps(doc))


@settings(FAST, max_examples=100)
@given(data=st.data(), value=JSON)
def test_manifest_reader_on_a_real_manifest_with_one_field_replaced(bundle_dir, good_manifest, data, value):
    path = data.draw(st.sampled_from(list(_paths(good_manifest))))
    check_reader(bundle_dir, json.dumps(_replace(good_manifest, path, value)))


@pytest.mark.slow
@SLOW
@given(data=st.data(), value=JSON)
def test_manifest_reader_on_many_more_manifests(bundle_dir, good_manifest, data, value):
    path = data.draw(st.sampled_from(list(_paths(good_manifest))))
    check_reader(bundle_dir, json.dumps(_replace(good_manifest, path, value)))
