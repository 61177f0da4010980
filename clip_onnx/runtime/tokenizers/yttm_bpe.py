"""YouTokenToMe BPE encoding (as used by ruCLIP) in plain Python, without youtokentome.

Reproduces ``yttm.BPE(path).encode([text], output_type=ID, dropout_prob=0.0)``
id for id, and ruCLIP's ``RuCLIPProcessor.encode_text`` on top of it.

How youtokentome encodes, which this module mirrors:

* The text is split into words on its own space set: the bytes that C
  ``isspace`` accepts in the C / C.UTF-8 locale (TAB, LF, VT, FF, CR, SPACE)
  plus U+2581 "▁", its word-start marker. Unicode spaces such as NBSP are
  ordinary characters (unknown ones, usually). Whitespace runs and leading or
  trailing whitespace produce nothing, so "" and "  " encode to [].
* Every word becomes ``[id("▁")] + [id(c) for c in word]``; a run of
  consecutive characters missing from the char table becomes one unk token.
* Merges: among all adjacent pairs that have a rule, the one with the lowest
  rule index is merged first, the leftmost one on ties, until none is left.

The model file is whitespace-separated integers: ``n m``, then n lines
``codepoint id`` (the char table), then m lines ``x y z`` (rule i merges ids x
and y into z; i is its priority), then ``unk pad bos eos``.
"""
from __future__ import annotations

import functools
import heapq
import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from clip_onnx.errors import BundleError, InputError
from clip_onnx.runtime.tokenizers.base import check_texts, pad_rows, resolve_spec

logger = logging.getLogger(__name__)

_WORD_START = "\u2581"
# A word is a maximal run of anything outside yttm's is_space set.
_WORD_RE = re.compile("[^\t\n\v\f\r \u2581]+")
# Stands for a run of unknown characters while merging. Rule ids are uint32, so
# every pair key (x << 32 | y) is >= 0, while any key built with -1 is negative.
_UNKNOWN = -1
_TEXT_CACHE_SIZE = 4096
_WORD_CACHE_SIZE = 65536


def _load_model(path: Path) -> tuple[dict[str, int], list[tuple[int, int, int]], int]:
    """Parse a yttm model file into (char -> id, rules, unk id)."""
    try:
        fields = path.read_text(encoding="ascii").split()
        values = [int(f) for f in fields]
    except OSError as exc:
        raise BundleError(f"cannot read youtokentome model {str(path)!r}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError):
        raise BundleError(f"youtokentome model {str(path)!r} is not a list of integers") from None
    if len(values) < 2:
        raise BundleError(f"youtokentome model {str(path)!r} is empty or truncated")
    n_chars, n_rules = values[0], values[1]
    expected = 2 + 2 * n_chars + 3 * n_rules + 4
    if n_chars < 0 or n_rules < 0 or len(values) != expected:
        raise BundleError(
            f"youtokentome model {str(path)!r} has {len(values)} numbers, "
            f"expected {expected} for {n_chars} chars and {n_rules} rules"
        )
    table = values[2 : 2 + 2 * n_chars]
    try:
        char2id = {chr(table[i]): table[i + 1] for i in range(0, len(table), 2)}
    except (ValueError, OverflowError):
        raise BundleError(f"youtokentome model {str(path)!r} lists a character outside Unicode") from None
    if _WORD_START not in char2id:
        raise BundleError(f"youtokentome model {str(path)!r} has no id for the word-start mark U+2581")
    flat = values[2 + 2 * n_chars : -4]
    rules = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
    unk_id = values[-4]
    return char2id, rules, unk_id


class YttmBpeTokenizer:
    """Text -> int64 [N, context_length] ids, matching ruCLIP's processor."""

    kind = "yttm_bpe"

    def __init__(self, model_path, *, context_length=77, bos_id=2, eos_id=3, pad_id=0, lowercase=True):
        if not isinstance(context_length, int) or context_length < 2:
            raise BundleError(f"context_length must be an int >= 2 (room for bos and eos), got {context_length!r}")
        self.model_path = Path(model_path)
        self.context_length = context_length
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.lowercase = lowercase
        self._char2id, rules, self.unk_id = _load_model(self.model_path)
        self._space_id = self._char2id[_WORD_START]
        self._rules = rules
        # Pair key -> rule index; a later duplicate wins, as in yttm's rule2id map.
        self._rank = {(x << 32) | y: i for i, (x, y, _) in enumerate(rules)}
        # lru_cache is thread-safe and bounded; bound per instance so two models never share entries.
        self._encode_word = functools.lru_cache(maxsize=_WORD_CACHE_SIZE)(self._encode_word_uncached)
        self._encode_cached = functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)(self._encode_uncached)
        self._row = functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)(self._row_uncached)
        logger.debug("loaded youtokentome model %s: %d chars, %d rules", self.model_path, len(self._char2id), len(rules))

    @classmethod
    def from_spec(cls, spec: dict, bundle_dir) -> "YttmBpeTokenizer":
        keys = ("context_length", "bos_id", "eos_id", "pad_id", "lowercase")
        path, options = resolve_spec(cls.kind, spec, bundle_dir, keys)
        return cls(path, **options)

    def encode(self, text: str) -> list[int]:
        """Raw BPE ids of ``text``, without lowercasing or bos/eos."""
        if not isinstance(text, str):
            raise InputError(f"expected str, got {type(text).__name__} {text!r:.60}")
        return list(self._encode_cached(text))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        return pad_rows([self._row(t) for t in texts], self.context_length, self.pad_id)

    def _row_uncached(self, text: str) -> tuple[int, ...]:
        if self.lowercase:
            text = text.lower()
        ids = self._encode_cached(text)[: self.context_length - 2]
        return (self.bos_id, *ids, self.eos_id)

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            # youtokentome fails the same way: it encodes the str to UTF-8 first.
            raise InputError(f"text {text!r:.60} is not valid Unicode: {exc.reason} at position {exc.start}") from None
        out: list[int] = []
        for word in _WORD_RE.findall(text):
            out.extend(self._encode_word(word))
        return tuple(out)

    def _encode_word_uncached(self, word: str) -> tuple[int, ...]:
        get = self._char2id.get
        seq = [self._space_id]
        for ch in word:
            cid = get(ch)
            if cid is None:
                if seq[-1] == _UNKNOWN:
                    continue
                cid = _UNKNOWN
            seq.append(cid)
        if len(seq) > 1:
            self._merge(seq)
        unk = self.unk_id
        return tuple(unk if t == _UNKNOWN else t for t in seq if t is not None)

    def _merge(self, seq: list) -> None:
        """Apply merges in place; merged-away slots become None.

        A heap of (rule index, position) gives yttm's order exactly: lowest rule
        first, leftmost on ties. Entries made stale by earlier merges are
        skipped when popped rather than removed.
        """
        rank, rules = self._rank, self._rules
        n = len(seq)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = []
        for i in range(n - 1):
            r = rank.get((seq[i] << 32) | seq[i + 1])
            if r is not None:
                heap.append((r, i))
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            j = nxt[i]
            x, y, z = rules[r]
            if j == -1 or seq[i] != x or seq[j] != y:
                continue
            seq[i], seq[j] = z, None
            k = nxt[j]
            nxt[i], nxt[j] = k, -1
            if k != -1:
                prv[k] = i
                r2 = rank.get((z << 32) | seq[k])
                if r2 is not None:
                    heapq.heappush(heap, (r2, i))
            h = prv[i]
            if h != -1:
                r2 = rank.get((seq[h] << 32) | z)
                if r2 is not None:
                    heapq.heappush(heap, (r2, h))
