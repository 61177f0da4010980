"""The tokenizer contract and what every runtime tokenizer shares: input checks, caches and the feed dict."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from clip_onnx.errors import BundleError, InputError
from clip_onnx.texts import check_texts

# Per instance: rows and raw ids of whole texts, and the ids of single words (far fewer distinct ones).
TEXT_CACHE_SIZE = 4096
WORD_CACHE_SIZE = 65536


class Tokenizer(Protocol):
    """Texts -> the textual graph's feed: ``input_ids`` and, where the model takes one, ``attention_mask``.

    Both are int64 ``[len(texts), context_length]``; padding uses ``pad_id``.
    A tokenizer is built from the manifest's tokenizer spec by ``from_spec``
    (or ``clip_onnx.runtime.tokenizers.load_tokenizer``) and is thread-safe.
    """

    kind: ClassVar[str]
    context_length: int
    pad_id: int

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], bundle_dir: str | Path) -> Tokenizer: ...

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]: ...

    def encode(self, text: str) -> list[int]: ...

    def token_counts(self, texts: Sequence[str]) -> np.ndarray: ...


class CachedTokenizer:
    """Base of the runtime tokenizers: the ``Tokenizer`` contract over three per-instance LRU caches.

    A subclass sets ``kind``, ``spec_keys`` (the spec options its constructor
    takes) and ``with_attention_mask``, and implements three steps:
    ``_encode_uncached`` (a whole text to raw ids), ``_encode_word_uncached``
    (one pre-token to ids) and ``_row_uncached`` (a text to its row: special
    ids added, truncated). ``lru_cache`` is thread-safe and bounded; the caches
    are bound per instance so two vocabularies never share entries.
    """

    kind: ClassVar[str]
    spec_keys: ClassVar[tuple[str, ...]] = ()
    with_attention_mask: ClassVar[bool] = False
    context_length: int
    pad_id: int

    def __init__(self) -> None:
        self._encode_word: Callable[[str], tuple[int, ...]] = functools.lru_cache(maxsize=WORD_CACHE_SIZE)(
            self._encode_word_uncached
        )
        self._encode_text: Callable[[str], tuple[int, ...]] = functools.lru_cache(maxsize=TEXT_CACHE_SIZE)(
            self._encode_uncached
        )
        self._row: Callable[[str], tuple[int, ...]] = functools.lru_cache(maxsize=TEXT_CACHE_SIZE)(self._row_uncached)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], bundle_dir: str | Path) -> CachedTokenizer:
        """The tokenizer a manifest's tokenizer spec describes, its file read from ``bundle_dir``."""
        path, options = resolve_spec(cls.kind, spec, bundle_dir, cls.spec_keys)
        return cls(path, **options)  # type: ignore[call-arg]  # each subclass takes (path, **its spec_keys)

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        rows = [self._row(t) for t in check_texts(texts)]
        feed = {"input_ids": pad_rows(rows, self.context_length, self.pad_id)}
        if self.with_attention_mask:
            lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
            feed["attention_mask"] = (np.arange(self.context_length, dtype=np.int64) < lengths[:, None]).astype(
                np.int64
            )
        return feed

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """int64 ``[len(texts)]``: the tokens the textual graph sees of each text, special ids included, after
        truncation to the context length and before padding (what an API reports as a request's usage)."""
        rows = [self._row(t) for t in check_texts(texts)]
        return np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))

    def encode(self, text: str) -> list[int]:
        """Raw ids of ``text``: no special ids, truncation or padding."""
        if not isinstance(text, str):
            raise InputError(f"expected str, got {type(text).__name__} {text!r:.60}")
        return list(self._encode_text(text))

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        raise NotImplementedError

    def _encode_word_uncached(self, word: str) -> tuple[int, ...]:
        raise NotImplementedError

    def _row_uncached(self, text: str) -> tuple[int, ...]:
        raise NotImplementedError


def check_utf8(text: str) -> None:
    """Refuse text that UTF-8 cannot encode (lone surrogates), as the reference tokenizers do."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"text {text!r:.60} is not valid Unicode: {exc.reason} at position {exc.start}") from None


def check_int(name: str, value: object, minimum: int, why: str = "") -> int:
    """``value`` as a spec option that must be an int >= ``minimum`` (a bool is refused), or BundleError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BundleError(f"{name} must be an int >= {minimum}{why}, got {value!r}")
    return value


def check_flag(name: str, value: object) -> bool:
    """``value`` as a spec option that must be true or false, or BundleError."""
    if not isinstance(value, bool):
        raise BundleError(f"{name} must be true or false, got {value!r}")
    return value


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> np.ndarray:
    """Stack id lists into an int64 [N, length] matrix filled with ``pad_id``."""
    out = np.full((len(rows), length), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def cut_padding(feed: Mapping[str, np.ndarray], pad_id: int) -> dict[str, np.ndarray]:
    """``feed`` cut after the last column that any row uses: the attention mask's 1s, or ids other than ``pad_id``."""
    used = feed["attention_mask"] if "attention_mask" in feed else feed["input_ids"] != pad_id
    columns = used.any(axis=0).nonzero()[0]
    length = int(columns.max()) + 1 if columns.size else 1
    return {k: np.ascontiguousarray(v[:, :length]) for k, v in feed.items()}


def resolve_spec(
    kind: str, spec: Mapping[str, Any], bundle_dir: str | Path, keys: Sequence[str]
) -> tuple[Path, dict[str, Any]]:
    """The tokenizer file a manifest spec names, inside ``bundle_dir``, and the spec's options among ``keys``."""
    if spec.get("kind") != kind:
        raise BundleError(f"tokenizer spec kind {spec.get('kind')!r} is not {kind!r}")
    name = spec.get("file")
    if not isinstance(name, str) or not name:
        raise BundleError(f"tokenizer spec needs a 'file' naming the {kind} model, got {name!r}")
    # A bundle must not point outside itself (a tampered or hand-edited spec).
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise BundleError(f"tokenizer file {name!r} must be a relative path inside the bundle {str(bundle_dir)!r}")
    return Path(bundle_dir) / name, {k: spec[k] for k in keys if k in spec}
