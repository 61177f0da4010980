"""OpenAI CLIP / open_clip byte-level BPE in plain Python, without torch or regex; ftfy optional.

Reproduces ``open_clip.tokenize(texts)`` (``SimpleTokenizer`` with its defaults)
id for id: ``[49406] + encode(text) + [49407]``, cut to ``context_length`` with
the last kept id replaced by 49407, zero-padded, int64 ``[N, context_length]``.

What ``SimpleTokenizer.encode`` does, and how this module mirrors it:

1. Cleaning (open_clip's ``basic_clean`` then ``whitespace_clean``, then
   ``.lower()`` for its default ``clean="lower"``): ``ftfy.fix_text``, then
   ``html.unescape`` twice, ``strip``, whitespace runs (``str.split``) joined
   by one space. ftfy's mojibake repair (``fix_encoding``: re-decoding text
   such as "cafÃ©" that looks like UTF-8 read as Latin-1) is a statistical
   heuristic over hand-tuned character tables, and it also rewrites some
   legitimate text (Czech "listí††" becomes "list톆"); open_clip tokenizes
   whatever it returns. Exact parity therefore means running ftfy itself, so
   :func:`open_clip_fix_text` calls ``ftfy.fix_text`` when ftfy is installed
   (``pip install 'clip-onnx[ftfy]'``). :func:`fix_text` re-implements
   everything else ftfy 6 does by default, 4-5x faster: HTML-entity decoding
   (skipped from the first line that contains "<" on), C1 controls read as
   Windows-1252, Latin ligatures, fullwidth/halfwidth forms, curly quotes,
   line breaks, surrogates, ANSI terminal escapes, control characters and
   NFC, repeated until nothing changes, line by line. It serves ASCII text
   without "&", which reaches ftfy's mojibake step as ASCII, where that step
   returns its input, and all text when ftfy is missing (then mojibake is
   tokenized as written, and a log line says so once).
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
   for ``regex``, which ships its own newer tables (26,872 code points for
   Python 3.11's Unicode 14 against regex 2026.11's tables).
   We use the standard library to keep the runtime free of a C extension.
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
import heapq
import html
import html.entities
import logging
import re
import string
import unicodedata
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from clip_onnx.errors import BundleError, InputError
from clip_onnx.runtime.tokenizers.base import check_texts, pad_rows, resolve_spec

logger = logging.getLogger(__name__)

_MAX_MERGES = 49152 - 256 - 2  # open_clip reads merges[1 : 49152 - 256 - 2 + 1]
_SOT, _EOT = "<start_of_text>", "<end_of_text>"
_TEXT_CACHE_SIZE = 4096
_WORD_CACHE_SIZE = 65536
CLEAN_MODES = ("whitespace", "lower", "canonicalize")


# ---------------------------------------------------------------------------
# Cleaning: ftfy.fix_text (ftfy itself where it can matter), html.unescape.
# ---------------------------------------------------------------------------

_ENTITY_RE = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_TERMINAL_ESCAPE_RE = re.compile(r"\x1b\[[\d;]*[a-zA-Z]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR_RE = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_FTFY_SEGMENT = 1_000_000  # ftfy's max_decode_length: a line longer than this is fixed in pieces


@functools.lru_cache(maxsize=None)
def _entity_table() -> dict[str, str]:
    """ftfy's entity set: HTML5 names that end in ';', plus ALL-CAPS forms of lowercase names.

    An upper-case form counts only when it is not itself an HTML5 name (so
    "&NTILDE;" is Ñ, while "&Ntilde;" keeps its own meaning) and stands for
    the upper-cased character(s): "&SZLIG;" is "SS".
    """
    table = {}
    for name, char in html.entities.html5.items():
        if not name.endswith(";"):
            continue
        table["&" + name] = char
        if name == name.lower():
            upper = "&" + name.upper()
            if html.unescape(upper) == upper:
                table[upper] = char.upper()
    return table


def _unescape_entity(match: re.Match) -> str:
    entity = match.group(0)
    char = _entity_table().get(entity)
    if char is not None:
        return char
    if entity.startswith("&#"):
        decoded = html.unescape(entity)
        # A numeric reference html.unescape could not decode comes back with its ';'.
        return entity if ";" in decoded else decoded
    return entity


@functools.lru_cache(maxsize=None)
def _char_map() -> dict[int, str]:
    """One str.translate table for four per-character fixes, applied in ftfy's order.

    C1 controls U+0080..U+009F are read as Windows-1252 bytes (the five bytes
    it leaves undefined stay as they are); Latin ligatures and Serbo-Croatian
    digraphs split into their letters (one level of compatibility
    decomposition, so "ﬅ" is "ſt"); fullwidth and halfwidth forms become
    their NFKC letters, U+3000 a space; curly quotes become straight ones.
    """
    c1 = {}
    for cp in range(0x80, 0xA0):
        try:
            c1[cp] = bytes([cp]).decode("cp1252")
        except UnicodeDecodeError:
            pass
    ligatures = {}
    for cp in [0x132, 0x133, 0x149, *range(0x1C4, 0x1CD), *range(0x1F1, 0x1F4), *range(0xFB00, 0xFB07)]:
        decomposition = unicodedata.decomposition(chr(cp)).split()
        ligatures[cp] = "".join(chr(int(h, 16)) for h in decomposition[1:])
    width = {0x3000: " "}
    for cp in range(0xFF01, 0xFFF0):
        alternate = unicodedata.normalize("NFKC", chr(cp))
        if alternate != chr(cp):
            width[cp] = alternate
    quotes = {cp: "'" for cp in (0x2BC, 0x2018, 0x2019, 0x201A, 0x201B)}
    quotes.update({cp: '"' for cp in range(0x201C, 0x2020)})

    def through(text: str, table: dict) -> str:
        return "".join(table.get(ord(c), c) for c in text)

    combined = {}
    for cp in set(c1) | set(ligatures) | set(width) | set(quotes):
        out = chr(cp)
        for table in (c1, ligatures, width, quotes):
            out = through(out, table)
        if out != chr(cp):
            combined[cp] = out
    return combined


# ftfy's remove_control_chars: C0 controls but TAB, LF, FF, CR; DEL; deprecated
# Arabic format controls; interlinear annotation marks; U+FFFC; the BOM.
_CONTROL_CHARS = dict.fromkeys(
    [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]
)


def _join_surrogates(match: re.Match) -> str:
    high, low = match.group(0)
    return chr(0x10000 + (ord(high) - 0xD800) * 0x400 + (ord(low) - 0xDC00))


def _fix_segment(text: str, unescape: bool) -> str:
    chars = _char_map()
    while True:
        before = text
        if unescape:
            text = _ENTITY_RE.sub(_unescape_entity, text)
        text = text.translate(chars)
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
        text = text.replace("\x85", "\n")
        if _SURROGATE_RE.search(text):
            text = _SURROGATE_PAIR_RE.sub(_join_surrogates, text)
            text = _SURROGATE_RE.sub("\ufffd", text)
        text = _TERMINAL_ESCAPE_RE.sub("", text)
        text = text.translate(_CONTROL_CHARS)
        text = unicodedata.normalize("NFC", text)
        if text == before:
            return text


def fix_text(text: str) -> str:
    """``ftfy.fix_text(text)`` with ftfy's defaults, except mojibake repair (see the module doc).

    ftfy works line by line (each piece keeps its "\\n"); from the first line
    containing "<" on, the text is taken for HTML and entities are left alone.
    """
    out = []
    unescape = True
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        end = min(end, pos + _FTFY_SEGMENT)
        segment = text[pos:end]
        if unescape and "<" in segment:
            unescape = False
        out.append(_fix_segment(segment, unescape))
        pos = end
    return "".join(out)


@functools.lru_cache(maxsize=None)
def _ftfy_fix_text():
    try:
        import ftfy
    except ImportError:
        logger.warning("ftfy is not installed: CLIP BPE cleaning skips its mojibake repair, so ids can differ from "
                    "open_clip on mis-decoded text; `pip install 'clip-onnx[ftfy]'` for exact parity")
        return None
    return ftfy.fix_text


def open_clip_fix_text(text: str) -> str:
    """``ftfy.fix_text(text)``: through ftfy when installed, except where its mojibake step cannot act."""
    if text.isascii() and "&" not in text:
        return fix_text(text)
    ftfy_fix = _ftfy_fix_text()
    return ftfy_fix(text) if ftfy_fix is not None else fix_text(text)


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str, clean: str = "lower") -> str:
    """open_clip's clean functions: "whitespace", "lower" (the default) and "canonicalize"."""
    text = html.unescape(html.unescape(open_clip_fix_text(text))).strip()
    if clean == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    text = " ".join(text.split()).strip()
    return text.lower() if clean == "lower" else text


# ---------------------------------------------------------------------------
# Pre-tokenizer: open_clip's regex pattern in stdlib re.
# ---------------------------------------------------------------------------

# Unicode White_Space, what regex's \s matches (str.isspace adds U+001C..U+001F).
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_YPOGEGRAMMENI = "\u0345"


def _class(ranges: list[tuple[int, int]]) -> str:
    def esc(cp: int) -> str:
        return re.escape(chr(cp)) if cp > 0x20 else f"\\x{cp:02x}"

    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


@functools.lru_cache(maxsize=None)
def _pretokenize_re() -> re.Pattern:
    """open_clip's pattern for stdlib re; built once per process (about 0.2 s)."""
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
        f"|[{letter}]+|[{number}]|[^{_WHITE_SPACE}{_YPOGEGRAMMENI}{letter}{number}]+"
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


class ClipBpeTokenizer:
    """Text -> int64 [N, context_length] ids, matching ``open_clip.tokenize``."""

    kind = "clip_bpe"

    def __init__(self, vocab_path, *, context_length=77, clean="whitespace", lowercase=True):
        if not isinstance(context_length, int) or isinstance(context_length, bool) or context_length < 2:
            raise BundleError(f"context_length must be an int >= 2 (room for sot and eot), got {context_length!r}")
        if clean not in CLEAN_MODES:
            raise BundleError(f"unknown clean mode {clean!r} for clip_bpe; expected one of {list(CLEAN_MODES)}")
        if not isinstance(lowercase, bool):
            raise BundleError(f"lowercase must be true or false, got {lowercase!r}")
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
        self._merges = merges
        self._by_heap = self._merge_order_is_causal(merges, vocab[:512])
        self._encode_word = functools.lru_cache(maxsize=_WORD_CACHE_SIZE)(self._encode_word_uncached)
        self._encode_cached = functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)(self._encode_uncached)
        self._row = functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)(self._row_uncached)
        logger.debug("loaded CLIP BPE %s: %d merges", self.vocab_path, len(merges))

    @classmethod
    def from_spec(cls, spec: dict, bundle_dir) -> "ClipBpeTokenizer":
        path, options = resolve_spec(cls.kind, spec, bundle_dir, ("context_length", "clean", "lowercase"))
        return cls(path, **options)

    def encode(self, text: str) -> list[int]:
        """``SimpleTokenizer.encode``: BPE ids of the cleaned text, without sot/eot."""
        if not isinstance(text, str):
            raise InputError(f"expected str, got {type(text).__name__} {text!r:.60}")
        return list(self._encode_cached(text))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        return pad_rows([self._row(t) for t in texts], self.context_length, self.pad_id)

    def _row_uncached(self, text: str) -> tuple[int, ...]:
        ids = (self.sot_id, *self._encode_cached(text), self.eot_id)
        if len(ids) > self.context_length:
            ids = (*ids[: self.context_length - 1], self.eot_id)
        return ids

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
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
            symbols = self._merge_heap(symbols) if self._by_heap else self._merge_rounds(symbols)
        encoder = self._encoder
        return tuple(encoder[s] for s in symbols)

    @staticmethod
    def _merge_order_is_causal(merges, base) -> bool:
        """True when every rule's two parts exist before it (are bytes or made by an earlier rule).

        Then merging the lowest (rank, position) first, one pair at a time, is
        the same as open_clip's rounds (lowest rank, every occurrence left to
        right), because a merge only creates pairs of higher rank. CLIP's
        vocabulary is causal; any other file falls back to the rounds.
        """
        made = dict.fromkeys(base, -1)
        made.update(dict.fromkeys((b + "</w>" for b in base), -1))
        for rank, (a, b) in enumerate(merges):
            if made.get(a, rank) >= rank or made.get(b, rank) >= rank:
                return False
            made.setdefault(a + b, rank)
        return True

    def _merge_rounds(self, word: list[str]) -> list[str]:
        ranks = self._ranks
        while len(word) > 1:
            best = min(zip(word, word[1:]), key=lambda pair: ranks.get(pair, float("inf")))
            if best not in ranks:
                break
            first, second = best
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def _merge_heap(self, seq: list[str]) -> list[str]:
        ranks = self._ranks
        n = len(seq)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = [(r, i) for i in range(n - 1) if (r := ranks.get((seq[i], seq[i + 1]))) is not None]
        heapq.heapify(heap)
        merges = self._merges
        while heap:
            r, i = heapq.heappop(heap)
            j = nxt[i]
            first, second = merges[r]
            if j == -1 or seq[i] != first or seq[j] != second:
                continue  # stale: one side was merged away since this entry was pushed
            z = first + second
            seq[i], seq[j] = z, None
            k = nxt[j]
            nxt[i] = k
            if k != -1:
                prv[k] = i
                r2 = ranks.get((z, seq[k]))
                if r2 is not None:
                    heapq.heappush(heap, (r2, i))
            h = prv[i]
            if h != -1:
                r2 = ranks.get((seq[h], z))
                if r2 is not None:
                    heapq.heappush(heap, (r2, h))
        return [s for s in seq if s is not None]
