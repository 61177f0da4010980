"""BERT WordPiece tokenization (as used by Chinese-CLIP) in plain Python, without transformers.

Reproduces, id for id, the Python BERT tokenizer of transformers
(``BertTokenizer`` up to 4.x, ``BertTokenizerLegacy`` in 5.x) called as
``tok(texts, padding="max_length", truncation=True, max_length=context_length)``.

The pipeline, which this module mirrors step by step:

1. Special tokens written literally in the text (``[CLS]``, ``[SEP]``,
   ``[PAD]``, ``[UNK]``, ``[MASK]``, case-sensitive, anywhere, even inside a
   word) are cut out first and encode to their own ids; the text between them
   goes through the steps below piece by piece.
2. Clean: drop NUL, U+FFFD and every character whose category starts with C
   (controls, formats such as U+200B / U+FEFF, private use, unassigned,
   surrogates) except TAB / LF / CR; map those three and every Zs character
   to a space.
3. If ``tokenize_chinese_chars``: put spaces around every CJK ideograph, in
   BERT's code-point ranges (see ``_CJK_RANGES``); kana, hangul and CJK
   punctuation are not in them.
4. NFC-normalise, then split on whitespace (``str.split``, which also breaks
   on U+2028 / U+2029).
5. Per word, unless it is exactly a special token: ``str.lower`` (so a
   word-final capital sigma becomes "ς") when ``lowercase``; strip accents
   (NFD, then drop category Mn) when ``strip_accents`` is true, or when it is
   None and ``lowercase`` is on; then split off every punctuation character
   (ASCII 33-47, 58-64, 91-96, 123-126, and Unicode categories P*) as a word
   of its own.
6. WordPiece each word: longest vocabulary entry first, continuations looked
   up with a "##" prefix; a word longer than ``max_input_chars_per_word``
   (100) characters, or one with any piece that matches nothing, becomes a
   single [UNK].
7. ``[CLS] + ids[:context_length - 2] + [SEP]``, padded with [PAD] to
   ``context_length``; ``attention_mask`` is 1 over the unpadded part.

Other implementations agree on ordinary prompts and differ only on edge cases
(each one checked in ``tests/export/test_wordpiece.py``):

* the Rust tokenizer (``BertTokenizerFast``, plain ``BertTokenizer`` in
  transformers 5) keeps unassigned code points as [UNK] (so do emoji newer
  than this Python's Unicode tables, which this module and the Python
  tokenizer drop), has Unicode tables of its own version, lowercases
  character by character (word-final "Σ" -> "σ"), starts the last-but-two CJK
  range at U+2B920, never NFC-normalises, only sees special tokens in the raw
  text, and refuses lone surrogates (as this module does; the Python one
  drops them);
* ``cn_clip.clip.tokenize`` drops only Cc / Cf characters (private-use and
  unassigned ones become [UNK]), does not treat ``[CLS]`` etc. in the text as
  special, and allows words of up to 200 characters (set
  ``max_input_chars_per_word`` to 200 for that).

Character classes come from the running Python's ``unicodedata``, so text
with characters assigned in a newer Unicode version than it knows may encode
differently under another Python version (as with the Python tokenizer).

The vocabulary file is one token a line, the id being the line number
(read as transformers does: UTF-8, universal newlines, only the newline
stripped, a repeated token keeps its last line).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path

from clip_onnx.errors import BundleError
from clip_onnx.runtime.tokenizers.base import CachedTokenizer, check_flag, check_int, check_utf8

logger = logging.getLogger(__name__)

UNK, CLS, SEP, PAD, MASK = "[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"
# The tokens transformers never splits and matches verbatim in the raw text.
_SPECIAL_TOKENS = (UNK, SEP, PAD, CLS, MASK)
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(t) for t in _SPECIAL_TOKENS) + ")")

# BERT's "Chinese character" ranges, exactly as in Google's and transformers' code
# (not all of Unicode's CJK blocks; 0x2B820-0x2CEAF is one range there).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


class _CleanTable(dict):
    """``str.translate`` table for steps 2-3, filled one code point at a time on first sight.

    Hits are plain dict lookups done by translate in C; a miss computes the
    entry in ``__missing__``. Concurrent misses store the same value, so the
    table needs no lock.
    """

    def __init__(self, split_cjk: bool):
        super().__init__()
        self.split_cjk = split_cjk

    def __missing__(self, cp: int) -> str | int | None:
        ch = chr(cp)
        value: str | int | None
        if ch in "\t\n\r ":
            value = " "
        elif cp == 0 or cp == 0xFFFD or unicodedata.category(ch)[0] == "C":
            value = None
        elif unicodedata.category(ch) == "Zs":
            value = " "
        elif self.split_cjk and _is_cjk(cp):
            value = f" {ch} "
        else:
            value = cp
        self[cp] = value
        return value


_CLEAN_TABLES = {True: _CleanTable(True), False: _CleanTable(False)}


class _PunctTable(dict):
    """Character -> is it BERT punctuation; filled on first sight."""

    def __missing__(self, ch: str) -> bool:
        cp = ord(ch)
        value = (
            33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(ch)[0] == "P"
        )
        self[ch] = value
        return value


_IS_PUNCT = _PunctTable()


def _strip_accents(word: str) -> str:
    if word.isascii():
        return word
    category = unicodedata.category
    return "".join(c for c in unicodedata.normalize("NFD", word) if category(c) != "Mn")


def _split_punct(word: str) -> list[str]:
    is_punct = _IS_PUNCT
    out: list[str] = []
    start = 0
    for i, ch in enumerate(word):
        if is_punct[ch]:
            if i > start:
                out.append(word[start:i])
            out.append(ch)
            start = i + 1
    if start == 0:
        return [word] if word else []
    if start < len(word):
        out.append(word[start:])
    return out


def _load_vocab(path: Path) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as reader:
            lines = reader.readlines()
    except OSError as exc:
        raise BundleError(f"cannot read WordPiece vocabulary {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BundleError(
            f"WordPiece vocabulary {str(path)!r} is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from None
    vocab = {line.rstrip("\n"): i for i, line in enumerate(lines)}
    missing = [t for t in (UNK, CLS, SEP, PAD) if t not in vocab]
    if missing:
        raise BundleError(
            f"WordPiece vocabulary {str(path)!r} ({len(lines)} lines) lacks the special token(s) {', '.join(missing)}"
        )
    return vocab


class WordPieceTokenizer(CachedTokenizer):
    """Text -> int64 [N, context_length] ``input_ids`` and ``attention_mask``, as BERT / Chinese-CLIP."""

    kind = "wordpiece"
    spec_keys = ("context_length", "lowercase", "strip_accents", "tokenize_chinese_chars", "max_input_chars_per_word")
    with_attention_mask = True

    def __init__(
        self,
        vocab_path,
        *,
        context_length=52,
        lowercase=True,
        strip_accents=None,
        tokenize_chinese_chars=True,
        max_input_chars_per_word=100,
    ):
        check_int("context_length", context_length, 2, " (room for [CLS] and [SEP])")
        check_flag("lowercase", lowercase)
        check_flag("tokenize_chinese_chars", tokenize_chinese_chars)
        if strip_accents is not None and not isinstance(strip_accents, bool):
            raise BundleError(f"strip_accents must be true, false or null, got {strip_accents!r}")
        check_int("max_input_chars_per_word", max_input_chars_per_word, 1)
        self.vocab_path = Path(vocab_path)
        self.context_length = context_length
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.max_input_chars_per_word = max_input_chars_per_word
        self._vocab = _load_vocab(self.vocab_path)
        self.unk_id, self.cls_id = self._vocab[UNK], self._vocab[CLS]
        self.sep_id, self.pad_id = self._vocab[SEP], self._vocab[PAD]
        # transformers maps a special token missing from the vocabulary to [UNK].
        self._special_ids = {t: self._vocab.get(t, self.unk_id) for t in _SPECIAL_TOKENS}
        self._max_token_len = max(map(len, self._vocab))
        self._clean = _CLEAN_TABLES[tokenize_chinese_chars]
        self._strip = strip_accents if strip_accents is not None else lowercase
        super().__init__()
        logger.debug("loaded WordPiece vocabulary %s: %d tokens", self.vocab_path, len(self._vocab))

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def _row_uncached(self, text: str) -> tuple[int, ...]:
        return (self.cls_id, *self._encode_text(text)[: self.context_length - 2], self.sep_id)

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        check_utf8(text)  # the Rust tokenizer refuses these too (the Python one silently drops them)
        out: list[int] = []
        if "[" in text:
            for i, chunk in enumerate(_SPECIAL_RE.split(text)):
                if i % 2:
                    out.append(self._special_ids[chunk])
                elif chunk:
                    self._encode_chunk(chunk, out)
        else:
            self._encode_chunk(text, out)
        return tuple(out)

    def _encode_chunk(self, chunk: str, out: list[int]) -> None:
        text = unicodedata.normalize("NFC", chunk.translate(self._clean))
        for word in text.split():
            if word in self._special_ids:
                # Only reachable when cleaning joined one up, e.g. "[C\u200bLS]": kept whole, as transformers does.
                out.extend(self._wordpiece(word))
            else:
                out.extend(self._encode_word(word))

    def _encode_word_uncached(self, word: str) -> tuple[int, ...]:
        if self.lowercase:
            word = word.lower()
        if self._strip:
            word = _strip_accents(word)
        ids: list[int] = []
        for piece in _split_punct(word):
            ids.extend(self._wordpiece(piece))
        return tuple(ids)

    def _wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first; a word with any unmatched rest is one [UNK]."""
        n = len(word)
        if n > self.max_input_chars_per_word:
            return [self.unk_id]
        get = self._vocab.get
        longest = self._max_token_len
        ids: list[int] = []
        start = 0
        while start < n:
            # No vocabulary entry is longer than `longest`, so shorter candidates are enough.
            end = min(n, start + longest)
            while end > start:
                tid = get(word[start:end] if start == 0 else "##" + word[start:end])
                if tid is not None:
                    break
                end -= 1
            else:
                return [self.unk_id]
            ids.append(tid)
            start = end
        return ids
