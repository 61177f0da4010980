"""Text cleaning before tokenizing, as open_clip does it: ftfy's ``fix_text``, HTML unescaping, whitespace.

open_clip's ``basic_clean`` then ``whitespace_clean`` (and ``.lower()`` for its
default ``clean="lower"``): ``ftfy.fix_text``, then ``html.unescape`` twice,
``strip``, whitespace runs (``str.split``) joined by one space. The CLIP BPE
tokenizer always cleans; the Unigram tokenizer does when its spec names a mode,
as open_clip's ``HFTokenizer`` does.

ftfy's mojibake repair (``fix_encoding``: re-decoding text such as "cafÃ©"
that looks like UTF-8 read as Latin-1) is a statistical heuristic over
hand-tuned character tables, and it also rewrites some legitimate text (Czech
"listí††" becomes "list톆"); open_clip tokenizes whatever it returns. Exact
parity therefore means running ftfy itself, so :func:`open_clip_fix_text` calls
``ftfy.fix_text`` when ftfy is installed (``pip install 'clip-onnx[ftfy]'``).
:func:`fix_text` re-implements everything else ftfy 6 does by default, faster
(see benchmarks/NOTES.md): HTML-entity decoding (skipped from the first line
that contains "<" on), C1 controls read as Windows-1252, Latin ligatures,
fullwidth/halfwidth forms, curly quotes, line breaks, surrogates, ANSI terminal
escapes, control characters and NFC, repeated until nothing changes, line by
line. It serves ASCII text without "&", which reaches ftfy's mojibake step as
ASCII, where that step returns its input, and all text when ftfy is missing
(then mojibake is tokenized as written, and a log line says so once).
"""

from __future__ import annotations

import functools
import html
import html.entities
import logging
import re
import string
import unicodedata
from collections.abc import Callable

from clip_onnx.errors import BundleError

logger = logging.getLogger(__name__)

CLEAN_MODES = ("whitespace", "lower", "canonicalize")
# Unicode White_Space: what regex's \s and Rust's char::is_whitespace match (str.isspace adds U+001C..U+001F).
WHITE_SPACE = "".join(
    ["\t\n\x0b\x0c\r \x85\xa0\u1680", *map(chr, range(0x2000, 0x200B)), "\u2028\u2029\u202f\u205f\u3000"]
)

_ENTITY_RE = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_TERMINAL_ESCAPE_RE = re.compile(r"\x1b\[[\d;]*[a-zA-Z]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR_RE = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_FTFY_SEGMENT = 1_000_000  # ftfy's max_decode_length: a line longer than this is fixed in pieces


@functools.cache
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


@functools.cache
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


@functools.cache
def _ftfy_fix_text() -> Callable[[str], str] | None:
    try:
        import ftfy
    except ImportError:
        logger.warning(
            "ftfy is not installed: text cleaning skips its mojibake repair, so ids can differ from "
            "open_clip on mis-decoded text; `pip install 'clip-onnx[ftfy]'` for exact parity"
        )
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


def check_clean_mode(clean: object, kind: str, optional: bool = False) -> None:
    """Refuse a spec's ``clean`` option unless it names one of CLEAN_MODES (or is None where ``optional``)."""
    if clean is None and optional:
        return
    if clean not in CLEAN_MODES:
        expected = f"{'null or ' if optional else ''}one of {list(CLEAN_MODES)}"
        raise BundleError(f"unknown clean mode {clean!r} for {kind}; expected {expected}")
