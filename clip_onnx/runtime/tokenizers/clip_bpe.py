"""OpenAI CLIP / open_clip byte-level BPE in plain Python, without torch or regex; ftfy optional.

Reproduces ``open_clip.tokenize(texts)`` (``SimpleTokenizer`` with its defaults)
id for id: ``[49406] + encode(text) + [49407]``, cut to ``context_length`` with
the last kept id replaced by 49407, zero-padded, int64 ``[N, context_length]``.

What ``SimpleTokenizer.encode`` does, and how this module mirrors it:

1. Cleaning: open_clip's ``basic_clean`` then ``whitespace_clean`` (then
   ``.lower()`` for its default ``clean="lower"``), see ``text_cleaning``.
2. Pre-tokenizing with open_clip's pattern, compiled with ``regex.IGNORECASE``::

       <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+

   ``re`` has no ``\\p{L}``/``\\p{N}``, so the letter and number classes are
   built from ``unicodedata`` categories (L*, N*) as explicit ranges, and the
   case-insensitivity is scoped to the literal alternatives, where it only
   matters for "ſ" (U+017F, which folds to "s"). Two quirks of the original are
   kept: U+0345 (combining ypogegrammeni) matches no alternative, because
   under IGNORECASE ``regex`` tests it as "ι" for the letter class but excludes
   it from the negated one, so it separates tokens and is dropped; ``\\s`` is
   Unicode White_Space. The one known difference from ``regex``: characters
   assigned in a Unicode version newer than this Python's ``unicodedata``
   (category Cn here) count as "other" symbols here but as letters or numbers
   for ``regex``, which ships its own newer tables (see benchmarks/NOTES.md for
   how many). We use the standard library to keep the runtime free of a C extension.
3. Each pre-token's UTF-8 bytes map to printable characters (GPT-2's byte to
   unicode table), the last one gets "</w>", and merges apply lowest rank
   first, all non-overlapping occurrences left to right, until none applies.
   A literal "<start_of_text>"/"<end_of_text>" in the text becomes its special id.

The vocabulary file is open_clip's ``bpe_simple_vocab_16e6.txt.gz``: a header
line, then merge rules "a b", of which the first 48,894 are used. Ids: the 256
byte characters, the same with "</w>", one id per merge, then
<start_of_text> 49406 and <end_of_text> 49407.
"""

from __future__ import annotations

import functools
import gzip
import logging
import re
import unicodedata
import zlib
from pathlib import Path

from clip_onnx.errors import BundleError, InputError
from clip_onnx.runtime.tokenizers.base import CachedTokenizer, check_flag, check_int
from clip_onnx.runtime.tokenizers.bpe_merge import merge_in_rounds, merge_lowest_first, merge_order_is_causal
from clip_onnx.runtime.tokenizers.text_cleaning import WHITE_SPACE, check_clean_mode, clean_text

logger = logging.getLogger(__name__)

_MAX_MERGES = 49152 - 256 - 2  # open_clip reads merges[1 : 49152 - 256 - 2 + 1]
_SOT, _EOT = "<start_of_text>", "<end_of_text>"
_YPOGEGRAMMENI = "\u0345"


def _class(ranges: list[tuple[int, int]]) -> str:
    def esc(cp: int) -> str:
        return re.escape(chr(cp)) if cp > 0x20 else f"\\x{cp:02x}"

    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


@functools.cache
def _pretokenize_re() -> re.Pattern:
    """open_clip's pattern for stdlib re; built once per process (it walks every code point)."""
    letters: list[tuple[int, int]] = []
    numbers: list[tuple[int, int]] = []
    category = unicodedata.category
    for cp in range(0x110000):
        major = category(chr(cp))[0]
        target = letters if major == "L" else numbers if major == "N" else None
        if target is None or cp == 0x345:
            continue
        if target and target[-1][1] == cp - 1:
            target[-1] = (target[-1][0], cp)
        else:
            target.append((cp, cp))
    letter, number = _class(letters), _class(numbers)
    specials = "|".join(re.escape(t) for t in (_SOT, _EOT))
    return re.compile(
        f"(?i:{specials}|'s|'t|'re|'ve|'m|'ll|'d)"
        f"|[{letter}]+|[{number}]|[^{re.escape(WHITE_SPACE)}{_YPOGEGRAMMENI}{letter}{number}]+"
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table.

    Printable Latin-1 bytes ("!".."~", "¡".."¬", "®".."ÿ") stand for
    themselves; the other 68 bytes, in increasing order, take U+0100 onwards.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_CHARS = _bytes_to_unicode()
_BYTE_ORDER = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
_BYTE_ORDER += [b for b in range(256) if b not in set(_BYTE_ORDER)]
# bytes.translate needs a byte table; decode through latin-1 then str.translate does the rest.
_BYTE_TRANSLATE = {b: _BYTE_CHARS[b] for b in range(256)}


def _load_merges(path: Path) -> list[tuple[str, str]]:
    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"CLIP BPE vocabulary {str(path)!r} is missing") from None
    except gzip.BadGzipFile as exc:
        raise BundleError(f"CLIP BPE vocabulary {str(path)!r} is not a gzip file: {exc}") from None
    except OSError as exc:
        raise BundleError(f"cannot read CLIP BPE vocabulary {str(path)!r}: {exc.strerror or exc}") from None
    except (EOFError, zlib.error) as exc:
        raise BundleError(f"CLIP BPE vocabulary {str(path)!r} is a damaged gzip file: {exc}") from None
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise BundleError(f"CLIP BPE vocabulary {str(path)!r} is not UTF-8 text") from None
    body = lines[1 : _MAX_MERGES + 1]
    while body and body[-1] == "":
        body.pop()
    if not body:
        raise BundleError(f"CLIP BPE vocabulary {str(path)!r} has no merge rules")
    merges = []
    for number, line in enumerate(body, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise BundleError(f"CLIP BPE vocabulary {str(path)!r} line {number} is {line!r:.60}, expected 'left right'")
        merges.append((parts[0], parts[1]))
    return merges


class ClipBpeTokenizer(CachedTokenizer):
    """Text -> ``{"input_ids"}``, int64 [N, context_length], matching ``open_clip.tokenize``."""

    kind = "clip_bpe"
    spec_keys = ("context_length", "clean", "lowercase")

    def __init__(self, vocab_path, *, context_length=77, clean="whitespace", lowercase=True):
        check_int("context_length", context_length, 2, " (room for sot and eot)")
        check_clean_mode(clean, self.kind)
        check_flag("lowercase", lowercase)
        self.vocab_path = Path(vocab_path)
        self.context_length = context_length
        # "lower" is open_clip's name for whitespace cleaning plus lowercasing.
        self.clean = "lower" if clean == "lower" or (clean == "whitespace" and lowercase) else clean
        merges = _load_merges(self.vocab_path)
        vocab = [_BYTE_CHARS[b] for b in _BYTE_ORDER]
        vocab += [v + "</w>" for v in vocab]
        vocab += [a + b for a, b in merges]
        vocab += [_SOT, _EOT]
        # dict() keeps the last id of a repeated string, as open_clip's encoder does.
        self._encoder = {token: i for i, token in enumerate(vocab)}
        self.sot_id, self.eot_id = self._encoder[_SOT], self._encoder[_EOT]
        self.pad_id = 0
        self._specials = {_SOT: self.sot_id, _EOT: self.eot_id}
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._rules = [(a, b, a + b) for a, b in merges]
        self._by_heap = merge_order_is_causal(merges, vocab[:512])
        super().__init__()
        logger.debug("loaded CLIP BPE %s: %d merges", self.vocab_path, len(merges))

    def _row_uncached(self, text: str) -> tuple[int, ...]:
        ids = (self.sot_id, *self._encode_text(text), self.eot_id)
        if len(ids) > self.context_length:
            ids = (*ids[: self.context_length - 1], self.eot_id)
        return ids

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        """``SimpleTokenizer.encode``: BPE ids of the cleaned text."""
        text = clean_text(text, self.clean)
        out: list[int] = []
        specials = self._specials
        for token in _pretokenize_re().findall(text):
            special = specials.get(token)
            if special is not None:
                out.append(special)
            else:
                out.extend(self._encode_word(token))
        return tuple(out)

    def _encode_word_uncached(self, token: str) -> tuple[int, ...]:
        try:
            raw = token.encode("utf-8")
        except UnicodeEncodeError as exc:  # unreachable after cleaning, which replaces lone surrogates
            raise InputError(f"text piece {token!r:.60} is not valid Unicode: {exc.reason}") from None
        chars = raw.decode("latin-1").translate(_BYTE_TRANSLATE)
        symbols = [*chars[:-1], chars[-1] + "</w>"]
        if len(symbols) > 1:
            if self._by_heap:
                symbols = merge_lowest_first(symbols, self._ranks, self._rules)
            else:
                symbols = merge_in_rounds(symbols, self._ranks)
        encoder = self._encoder
        return tuple(encoder[s] for s in symbols)
