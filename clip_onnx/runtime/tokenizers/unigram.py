"""SentencePiece-Unigram encoding (XLM-R style) from a Hugging Face ``tokenizer.json``, in plain Python.

Reproduces the ``tokenizers`` library's ``Tokenizer.encode_batch`` with
truncation and padding to ``context_length`` (what open_clip's ``HFTokenizer``
asks for: ``padding="max_length", truncation=True, max_length=context_length``)
id for id, and its attention mask. How ``tokenizers`` encodes, which this
module mirrors:

* The file is read as tokenizers reads it: vocab scores go through
  serde_json's default float parser, which rounds twice and leaves about one
  score in seven one ulp away from Python's ``float()`` (enough to flip ties).
  ``scores="exact"`` reads them correctly rounded instead: that is what a
  tokenizer built in memory from Python floats holds (transformers 5 builds
  XLM-R's that way), and a file saved from it writes each score as its shortest
  round-trip literal.
* Added tokens (``added_tokens``, e.g. ``<s>``, ``<pad>``, ``<mask>``) are cut
  out of the raw text first, leftmost-longest, and become their ids; those
  marked ``normalized`` are looked for, by their normalized content, in the
  normalized text. ``lstrip``/``rstrip`` swallow the whitespace beside them.
  Empty pieces are dropped.
* Each remaining piece is normalized as a whole by the ``normalizer``:
  ``Sequence``, ``NFC``, ``NFD``, ``NFKC``, ``NFKD``, ``Lowercase`` (per
  character), ``Strip``, ``StripAccents``, ``Replace`` (string or regex) and
  ``Prepend`` and ``Precompiled`` (the SentencePiece charsmap of the real XLM-R
  file, see ``charsmap``) are implemented; any other normalizer is refused
  with a BundleError naming it.
* Pre-tokenizers: ``Metaspace`` replaces " " by "▁", prepends "▁" to a piece
  that does not start with one (``prepend_scheme`` "always"; "first": only at
  the start of the text; "never") and splits before every "▁" (``split``);
  ``WhitespaceSplit`` splits on White_Space runs and drops them; a
  ``Sequence`` of these runs them in order (transformers 5 writes
  ``[WhitespaceSplit, Metaspace]`` for XLM-R).
* The ``Unigram`` model picks the segmentation of best total score (Viterbi;
  on equal scores the path found first wins: earlier start, then shorter
  piece). A character with no one-character piece becomes an unknown node
  scored ``min(score) - 10``; consecutive nodes carrying the unk id are fused
  into one piece, which is the unk id unless the fused string is itself in the
  vocabulary (with ``byte_fallback``, its UTF-8 bytes as ``<0xNN>`` pieces when
  all of them exist).
* Truncation keeps the first ``context_length - added`` ids, where ``added``
  is the number of ids the post-processor adds (2 for ``<s> $A </s>``), so
  ``</s>`` always ends the row; ``TemplateProcessing``, ``RobertaProcessing``
  or ``BertProcessing`` then add them, and padding fills with the pad id (1,
  ``<pad>``, for XLM-R) where the attention mask is 0. A "<pad>" typed in the
  text keeps mask 1, as in tokenizers (open_clip's HF text encoder would mask
  it, since it masks by ``ids != pad_id``).

Known differences: NFC/NFD/NFKC/NFKD run on this Python's ``unicodedata``
with the code points tokenizers' older tables do not know left alone
(``_LEGACY_UNASSIGNED``); ``Lowercase`` uses Python's case tables, so the 55
code points that gained a lowercase after Python 3.11's Unicode 14 stay as they
are here. Optional ``clean`` in the spec ("whitespace", "lower",
"canonicalize") first applies open_clip's text cleaning (see ``clip_bpe``), as
open_clip's ``HFTokenizer`` does with "whitespace" before the HF tokenizer.
"""
from __future__ import annotations

import functools
import json
import logging
import re
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

from clip_onnx.errors import BundleError, InputError
from clip_onnx.runtime.tokenizers.base import check_texts, pad_rows, resolve_spec

logger = logging.getLogger(__name__)

_K_UNK_PENALTY = 10.0
_TEXT_CACHE_SIZE = 4096
_PIECE_CACHE_SIZE = 65536
# Rust's char::is_whitespace: the Unicode White_Space property.
_WHITE_SPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)
_WHITE_SPACE_STR = "".join(sorted(_WHITE_SPACE))


# ---------------------------------------------------------------------------
# Normalizers: each is a str -> str function built from its JSON object.
# ---------------------------------------------------------------------------

# tokenizers normalizes with Unicode tables older than Python 3.11's (Unicode
# 14): to it these code points are unassigned, so NFC/NFD/NFKC/NFKD leave them
# as they are and they block composition and reordering like any starter. They
# are the ones whose normalization, alone or after a combining mark, differs
# between the two (found by comparing tokenizers 0.23 with every code point;
# tests/test_unigram.py recomputes the list). Normalization mappings never
# change once assigned, so the list only grows with a newer Python.
_LEGACY_UNASSIGNED = (
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8D3), (0x9FE, 0x9FE), (0xC3C, 0xC3C), (0xD3B, 0xD3C),
    (0xEBA, 0xEBA), (0x1715, 0x1715), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFA), (0x32FF, 0x32FF),
    (0xA7F2, 0xA7F4), (0xA82C, 0xA82C), (0xAB69, 0xAB69), (0x10781, 0x10785), (0x10787, 0x107B0),
    (0x107B2, 0x107BA), (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50), (0x10F82, 0x10F85),
    (0x11070, 0x11070), (0x1133B, 0x1133B), (0x1145E, 0x1145E), (0x11839, 0x1183A), (0x11938, 0x11938),
    (0x1193D, 0x1193E), (0x11943, 0x11943), (0x119E0, 0x119E0), (0x11A34, 0x11A34), (0x11A47, 0x11A47),
    (0x11A99, 0x11A99), (0x11D42, 0x11D42), (0x11D44, 0x11D45), (0x11D97, 0x11D97), (0x16FF0, 0x16FF1),
    (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF), (0x1F16C, 0x1F16C), (0x1FBF0, 0x1FBF9),
)
_LEGACY_RE = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _LEGACY_UNASSIGNED) + "]")


def _unicode_normalizer(form: str):
    def normalize(text: str) -> str:
        if text.isascii():
            return text
        if not _LEGACY_RE.search(text):
            return unicodedata.normalize(form, text)
        out, pos = [], 0
        for match in _LEGACY_RE.finditer(text):
            out.append(unicodedata.normalize(form, text[pos : match.start()]))
            out.append(match.group(0))
            pos = match.end()
        out.append(unicodedata.normalize(form, text[pos:]))
        return "".join(out)

    return normalize


def _lowercase(text: str) -> str:
    # tokenizers lowercases character by character (no final-sigma rule).
    return "".join(c.lower() for c in text) if not text.isascii() else text.lower()


def _strip_accents(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c) not in ("Mn", "Mc", "Me"))


def _build_normalizer(spec, where: str):
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise BundleError(f"{where}: normalizer must be an object with a 'type', got {spec!r:.80}")
    kind = spec["type"]
    if kind == "Sequence":
        parts = spec.get("normalizers")
        if not isinstance(parts, list):
            raise BundleError(f"{where}: Sequence normalizer needs a 'normalizers' list")
        steps = [_build_normalizer(p, where) for p in parts]
        steps = [s for s in steps if s is not None]

        def sequence(text: str) -> str:
            for step in steps:
                text = step(text)
            return text

        return sequence
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return _unicode_normalizer(kind)
    if kind == "Lowercase":
        return _lowercase
    if kind == "Precompiled":
        from clip_onnx.runtime.tokenizers.charsmap import PrecompiledCharsmap

        return PrecompiledCharsmap.from_base64(spec.get("precompiled_charsmap"), where)
    if kind == "StripAccents":
        return _strip_accents
    if kind == "Strip":
        left, right = spec.get("strip_left", True), spec.get("strip_right", True)
        if left and right:
            return lambda text: text.strip(_WHITE_SPACE_STR)
        if left:
            return lambda text: text.lstrip(_WHITE_SPACE_STR)
        if right:
            return lambda text: text.rstrip(_WHITE_SPACE_STR)
        return lambda text: text
    if kind == "Prepend":
        prefix = spec.get("prepend")
        if not isinstance(prefix, str):
            raise BundleError(f"{where}: Prepend normalizer needs a 'prepend' string")
        return lambda text: prefix + text if text else text
    if kind == "Replace":
        pattern, content = spec.get("pattern"), spec.get("content")
        if not isinstance(content, str) or not isinstance(pattern, dict) or len(pattern) != 1:
            raise BundleError(f"{where}: Replace normalizer needs 'pattern' {{String|Regex: ...}} and 'content'")
        (how, value), = pattern.items()
        if how == "String" and isinstance(value, str):
            if not value:
                raise BundleError(f"{where}: Replace normalizer has an empty pattern")
            return lambda text: text.replace(value, content)
        if how == "Regex" and isinstance(value, str):
            try:
                compiled = re.compile(value)
            except re.error as exc:
                raise BundleError(
                    f"{where}: Replace normalizer's Regex {value!r} is not supported here: {exc}"
                ) from None
            return lambda text: compiled.sub(lambda _match: content, text)
        raise BundleError(f"{where}: Replace normalizer pattern must be {{'String': ...}} or {{'Regex': ...}}")
    raise BundleError(
        f"{where}: normalizer {kind!r} is not supported by this runtime "
        "(supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend, Precompiled)"
    )


# ---------------------------------------------------------------------------
# Pre-tokenizer: Metaspace.
# ---------------------------------------------------------------------------

_WHITESPACE_RUN = re.compile("[" + re.escape(_WHITE_SPACE_STR) + "]+")


class _Metaspace:
    def __init__(self, spec: dict, where: str):
        replacement = spec.get("replacement", "\u2581")
        if not isinstance(replacement, str) or len(replacement) != 1:
            raise BundleError(f"{where}: Metaspace replacement must be one character, got {replacement!r}")
        scheme = spec.get("prepend_scheme")
        if scheme is None:  # files written before tokenizers 0.15
            scheme = "always" if spec.get("add_prefix_space", True) else "never"
        if scheme not in ("always", "first", "never"):
            raise BundleError(f"{where}: Metaspace prepend_scheme {scheme!r} is not one of always, first, never")
        self.mark, self.scheme, self.split = replacement, scheme, bool(spec.get("split", True))

    def __call__(self, words: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
        mark = self.mark
        out = []
        for text, at_start in words:
            text = text.replace(" ", mark)
            if not text.startswith(mark) and (self.scheme == "always" or (self.scheme == "first" and at_start)):
                text = mark + text
            if not self.split:
                out.append((text, at_start))
                continue
            start = 0
            for i, ch in enumerate(text):
                if ch == mark and i > start:
                    out.append((text[start:i], at_start and start == 0))
                    start = i
            out.append((text[start:], at_start and start == 0))
        return out


def _whitespace_split(words: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """tokenizers' WhitespaceSplit: split on runs of White_Space, dropping them."""
    out = []
    for text, at_start in words:
        pos = 0
        for match in _WHITESPACE_RUN.finditer(text):
            if match.start() > pos:
                out.append((text[pos : match.start()], at_start and pos == 0))
            pos = match.end()
        if pos < len(text):
            out.append((text[pos:], at_start and pos == 0))
    return out


def _build_pre_tokenizer(spec, where: str) -> list:
    """The pre-tokenizer as a list of steps, each mapping [(word, starts the text)] to the same."""
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise BundleError(f"{where}: pre_tokenizer must be an object, got {spec!r:.80}")
    kind = spec.get("type")
    if kind == "Sequence":
        inner = spec.get("pretokenizers")
        if not isinstance(inner, list):
            raise BundleError(f"{where}: pre_tokenizer Sequence needs a 'pretokenizers' list")
        return [step for part in inner for step in _build_pre_tokenizer(part, where)]
    if kind == "Metaspace":
        return [_Metaspace(spec, where)]
    if kind == "WhitespaceSplit":
        return [_whitespace_split]
    raise BundleError(
        f"{where}: pre_tokenizer {kind!r} is not supported by this runtime (supported: Metaspace, WhitespaceSplit, "
        "and a Sequence of them)"
    )


# ---------------------------------------------------------------------------
# Post-processor: the ids around the sequence.
# ---------------------------------------------------------------------------

def _build_post_processor(spec, where: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if spec is None:
        return (), ()
    if not isinstance(spec, dict):
        raise BundleError(f"{where}: post_processor must be an object, got {spec!r:.80}")
    kind = spec.get("type")
    if kind == "RobertaProcessing" or kind == "BertProcessing":
        try:
            return (int(spec["cls"][1]),), (int(spec["sep"][1]),)
        except (KeyError, IndexError, TypeError, ValueError):
            raise BundleError(f"{where}: {kind} needs 'cls' and 'sep' as [token, id]") from None
    if kind == "TemplateProcessing":
        single, specials = spec.get("single"), spec.get("special_tokens", {})
        if not isinstance(single, list) or not isinstance(specials, dict):
            raise BundleError(f"{where}: TemplateProcessing needs a 'single' list and 'special_tokens'")
        before: list[int] = []
        after: list[int] = []
        seen_sequence = False
        for item in single:
            if not isinstance(item, dict) or len(item) != 1:
                raise BundleError(f"{where}: bad TemplateProcessing item {item!r:.80}")
            (what, body), = item.items()
            if what == "Sequence":
                if seen_sequence or body.get("id") != "A":
                    raise BundleError(f"{where}: TemplateProcessing 'single' must hold $A exactly once")
                seen_sequence = True
            elif what == "SpecialToken":
                name = body.get("id")
                token = specials.get(name)
                if not isinstance(token, dict) or not isinstance(token.get("ids"), list):
                    raise BundleError(f"{where}: TemplateProcessing special token {name!r} is not defined")
                (after if seen_sequence else before).extend(int(i) for i in token["ids"])
            else:
                raise BundleError(f"{where}: bad TemplateProcessing item {item!r:.80}")
        if not seen_sequence:
            raise BundleError(f"{where}: TemplateProcessing 'single' has no $A")
        return tuple(before), tuple(after)
    raise BundleError(
        f"{where}: post_processor {kind!r} is not supported by this runtime "
        "(supported: TemplateProcessing, RobertaProcessing, BertProcessing)"
    )


# tokenizers reads tokenizer.json with serde_json's default float parser, which
# is not correctly rounded: it accumulates up to 19 significant digits in a u64,
# converts that to f64 and multiplies or divides once by a power of ten, rounding
# twice. About one vocab score in seven comes out one ulp away from Python's
# float(), enough to flip Viterbi ties, so scores are parsed the same way here.
_POW10 = tuple(float(f"1e{i}") for i in range(309))
_U64_MAX = 2**64 - 1
_JSON_NUMBER = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?")


def _serde_json_f64(literal: str) -> float:
    match = _JSON_NUMBER.fullmatch(literal)
    if match is None:
        return float(literal)
    sign, whole, fraction, exp_sign, exp_digits = match.groups()
    significand, exponent, full = 0, 0, False
    for ch in whole:
        if full or (significand >= _U64_MAX // 10 and (significand > _U64_MAX // 10 or int(ch) > _U64_MAX % 10)):
            full = True  # further integer digits only scale
            exponent += 1
        else:
            significand = significand * 10 + int(ch)
    for ch in fraction or "":
        if full or (significand >= _U64_MAX // 10 and (significand > _U64_MAX // 10 or int(ch) > _U64_MAX % 10)):
            break  # further fraction digits are ignored
        significand = significand * 10 + int(ch)
        exponent -= 1
    if exp_digits is not None:
        exponent += -int(exp_digits) if exp_sign == "-" else int(exp_digits)
    value = float(significand)
    while True:
        if abs(exponent) < len(_POW10):
            value = value * _POW10[exponent] if exponent >= 0 else value / _POW10[-exponent]
            break
        if value == 0.0:
            break
        if exponent >= 0:
            return float(literal)  # out of range for serde_json too
        value /= 1e308
        exponent += 308
    return -value if sign else value


_SCORE_PARSERS = {"serde_json": _serde_json_f64, "exact": float}


class _AddedToken:
    __slots__ = ("id", "content", "lstrip", "rstrip", "normalized")

    def __init__(self, spec: dict, where: str):
        try:
            self.id = int(spec["id"])
            self.content = spec["content"]
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{where}: added token {spec!r:.80} needs 'id' and 'content'") from None
        if not isinstance(self.content, str) or not self.content:
            raise BundleError(f"{where}: added token {spec!r:.80} has an empty content")
        if spec.get("single_word"):
            raise BundleError(
                f"{where}: added token {self.content!r} uses single_word, which this runtime does not support"
            )
        self.lstrip = bool(spec.get("lstrip", False))
        self.rstrip = bool(spec.get("rstrip", False))
        self.normalized = bool(spec.get("normalized", not spec.get("special", False)))


def _matcher(tokens: list[_AddedToken], normalize=None):
    """Leftmost-longest matching of added-token contents (longest alternative first at one start).

    Tokens marked ``normalized`` are looked for in normalized text, by their
    normalized content, as tokenizers does.
    """
    by_content = {}
    for token in tokens:
        content = normalize(token.content) if normalize else token.content
        if content:
            by_content[content] = token  # a later duplicate wins, as in tokenizers' map
    if not by_content:
        return None, {}
    ordered = sorted(by_content, key=len, reverse=True)
    return re.compile("|".join(re.escape(c) for c in ordered)), by_content


def _split_added(text: str, matcher) -> list[tuple[str, _AddedToken | None]]:
    """Cut ``text`` at added tokens: [(piece, token or None)], empty pieces dropped."""
    pattern, by_content = matcher
    if pattern is None or not text:
        return [(text, None)] if text else []
    out = []
    start_offset = 0
    for match in pattern.finditer(text):
        token = by_content[match.group(0)]
        start, stop = match.start(), match.end()
        if token.lstrip:
            left = start
            while left > 0 and text[left - 1] in _WHITE_SPACE:
                left -= 1
            start = max(left, start_offset)
        if token.rstrip:
            while stop < len(text) and text[stop] in _WHITE_SPACE:
                stop += 1
        if start_offset < start:
            out.append((text[start_offset:start], None))
        out.append((text[start:stop], token))
        start_offset = stop
    if start_offset < len(text):
        out.append((text[start_offset:], None))
    return out


class UnigramTokenizer:
    """Texts -> {"input_ids", "attention_mask"}, int64 [N, context_length], matching ``tokenizers``."""

    kind = "unigram"

    def __init__(self, path, *, context_length=77, pad_id=None, clean=None, scores="serde_json"):
        if not isinstance(context_length, int) or isinstance(context_length, bool) or context_length < 1:
            raise BundleError(f"context_length must be a positive int, got {context_length!r}")
        if not isinstance(scores, str) or scores not in _SCORE_PARSERS:
            raise BundleError(f"scores must be one of {sorted(_SCORE_PARSERS)}, got {scores!r}")
        if clean is not None:
            from clip_onnx.runtime.tokenizers.clip_bpe import CLEAN_MODES

            if clean not in CLEAN_MODES:
                raise BundleError(
                    f"unknown clean mode {clean!r} for unigram; expected null or one of {list(CLEAN_MODES)}"
                )
        self.path = Path(path)
        self.context_length = context_length
        self.clean = clean
        where = f"tokenizer file {str(self.path)!r}"
        data = self._read_json(self.path, _SCORE_PARSERS[scores])
        model = data.get("model")
        if not isinstance(model, dict):
            raise BundleError(f"{where} has no 'model' object")
        if model.get("type") != "Unigram":
            raise BundleError(f"{where}: model type {model.get('type')!r} is not 'Unigram'")
        vocab = model.get("vocab")
        if not isinstance(vocab, list) or not vocab:
            raise BundleError(f"{where}: Unigram model has no vocab")
        pieces: dict[str, tuple[int, float]] = {}
        min_score = float("inf")
        try:
            for i, (piece, score) in enumerate(vocab):
                score = float(score)
                if not isinstance(piece, str):
                    raise TypeError
                pieces[piece] = (i, score)  # a later duplicate wins, as in tokenizers' token_to_ids
                min_score = min(min_score, score)
        except (TypeError, ValueError):
            raise BundleError(f"{where}: Unigram vocab entry #{i} is not [piece, score]") from None
        # A piece found in the lattice carries the id and score of its last occurrence.
        self._pieces = {p: (i, float(vocab[i][1])) for p, (i, _) in pieces.items() if p}
        # Longest piece per first character bounds the prefix search.
        self._max_len: dict[str, int] = {}
        for piece in self._pieces:
            if len(piece) > self._max_len.get(piece[0], 0):
                self._max_len[piece[0]] = len(piece)
        unk_id = model.get("unk_id")
        if unk_id is not None and (not isinstance(unk_id, int) or not 0 <= unk_id < len(vocab)):
            raise BundleError(f"{where}: unk_id {unk_id!r} is not an index into the vocab of {len(vocab)}")
        self.unk_id = unk_id
        self._unk_score = min_score - _K_UNK_PENALTY
        self._byte_fallback = bool(model.get("byte_fallback", False))

        added = [_AddedToken(t, where) for t in data.get("added_tokens") or []]
        self._normalize = _build_normalizer(data.get("normalizer"), where)
        self._raw_matcher = _matcher([t for t in added if not t.normalized])
        self._norm_matcher = _matcher([t for t in added if t.normalized], self._normalize)
        self._pre = _build_pre_tokenizer(data.get("pre_tokenizer"), where)
        self._before, self._after = _build_post_processor(data.get("post_processor"), where)
        n_added = len(self._before) + len(self._after)
        if context_length < n_added:
            raise BundleError(f"context_length {context_length} leaves no room for the {n_added} special ids")
        self._max_content = context_length - n_added
        self.pad_id = self._find_pad_id(data, pad_id, added, where)

        self._encode_piece = functools.lru_cache(maxsize=_PIECE_CACHE_SIZE)(self._encode_piece_uncached)
        self._row = functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)(self._row_uncached)
        logger.debug("loaded Unigram tokenizer %s: %d pieces", self.path, len(vocab))

    @staticmethod
    def _read_json(path: Path, parse_float) -> dict:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BundleError(f"tokenizer file {str(path)!r} is missing") from None
        except OSError as exc:
            raise BundleError(f"cannot read tokenizer file {str(path)!r}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise BundleError(f"tokenizer file {str(path)!r} is not UTF-8 text") from None
        try:
            data = json.loads(text, parse_float=parse_float)
        except json.JSONDecodeError as exc:
            raise BundleError(f"tokenizer file {str(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BundleError(f"tokenizer file {str(path)!r} does not hold a JSON object")
        return data

    def _find_pad_id(self, data: dict, pad_id, added: list[_AddedToken], where: str) -> int:
        if pad_id is not None:
            if not isinstance(pad_id, int) or isinstance(pad_id, bool):
                raise BundleError(f"pad_id must be an int, got {pad_id!r}")
            return pad_id
        padding = data.get("padding")
        if isinstance(padding, dict) and isinstance(padding.get("pad_id"), int):
            return padding["pad_id"]
        for token in added:
            if token.content == "<pad>":
                return token.id
        if "<pad>" in self._pieces:
            return self._pieces["<pad>"][0]
        raise BundleError(f"{where}: no <pad> token and no pad_id in the spec")

    @classmethod
    def from_spec(cls, spec: dict, bundle_dir) -> "UnigramTokenizer":
        path, options = resolve_spec(cls.kind, spec, bundle_dir, ("context_length", "pad_id", "clean", "scores"))
        return cls(path, **options)

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        texts = check_texts(texts)
        rows = [self._row(t) for t in texts]
        ids = pad_rows(rows, self.context_length, self.pad_id)
        mask = np.zeros_like(ids)
        for i, row in enumerate(rows):
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special ids, truncation or padding."""
        if not isinstance(text, str):
            raise InputError(f"expected str, got {type(text).__name__} {text!r:.60}")
        return self._content_ids(text)

    def _row_uncached(self, text: str) -> tuple[int, ...]:
        return (*self._before, *self._content_ids(text)[: self._max_content], *self._after)

    def _content_ids(self, text: str) -> list[int]:
        if self.clean is not None:
            from clip_onnx.runtime.tokenizers.clip_bpe import clean_text

            text = clean_text(text, self.clean)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            # tokenizers refuses these too: a Rust String cannot hold a lone surrogate.
            raise InputError(f"text {text!r:.60} is not valid Unicode: {exc.reason} at position {exc.start}") from None
        out: list[int] = []
        first = True  # the piece that starts the text, for prepend_scheme "first"
        for raw, token in _split_added(text, self._raw_matcher):
            if token is not None:
                out.append(token.id)
                first = False
                continue
            normalized = self._normalize(raw) if self._normalize else raw
            for piece, token2 in _split_added(normalized, self._norm_matcher):
                if token2 is not None:
                    out.append(token2.id)
                else:
                    for word in self._pre_tokenize(piece, first):
                        out.extend(self._encode_piece(word))
                first = False
            first = False
        return out

    def _pre_tokenize(self, text: str, at_start: bool) -> list[str]:
        words = [(text, at_start)]
        for step in self._pre:
            words = step(words)
        return [word for word, _ in words if word]

    def _encode_piece_uncached(self, text: str) -> tuple[int, ...]:
        """Viterbi segmentation of one pre-token, as tokenizers' Unigram.encode_optimized."""
        n = len(text)
        if n == 0:
            return ()
        pieces, max_len, unk_id, unk_score = self._pieces, self._max_len, self.unk_id, self._unk_score
        best = [0.0] * (n + 1)
        start_of = [-1] * (n + 1)
        id_of = [0] * (n + 1)
        for i in range(n):
            here = best[i]
            has_single = False
            limit = min(n, i + max_len.get(text[i], 0))
            for j in range(i + 1, limit + 1):
                hit = pieces.get(text[i:j])
                if hit is None:
                    continue
                pid, score = hit
                candidate = score + here
                if start_of[j] < 0 or candidate > best[j]:
                    best[j], start_of[j], id_of[j] = candidate, i, pid
                if j == i + 1:
                    has_single = True
            if not has_single:
                if unk_id is None:
                    raise InputError(f"character {text[i]!r} is not in the vocabulary and the model has no unk_id")
                j = i + 1
                candidate = unk_score + here
                if start_of[j] < 0 or candidate > best[j]:
                    best[j], start_of[j], id_of[j] = candidate, i, unk_id
        # Walk back; consecutive unknown nodes (nodes with the unk id) fuse into one piece.
        strings: list[tuple[str, bool]] = []
        end = n
        fused_end = -1
        while end > 0:
            begin = start_of[end]
            is_unk = unk_id is not None and id_of[end] == unk_id
            if is_unk:
                if fused_end < 0:
                    fused_end = end
            else:
                if fused_end >= 0:
                    strings.append((text[end:fused_end], True))
                    fused_end = -1
                strings.append((text[begin:end], False))
            end = begin
        if fused_end >= 0:
            strings.append((text[0:fused_end], True))
        strings.reverse()
        out: list[int] = []
        for s, _ in strings:
            hit = pieces.get(s)
            if hit is not None:
                out.append(hit[0])
                continue
            if self._byte_fallback:
                byte_ids = [pieces.get(f"<0x{b:02X}>") for b in s.encode("utf-8")]
                if all(b is not None for b in byte_ids):
                    out.extend(b[0] for b in byte_ids)
                    continue
            out.append(unk_id)
        return tuple(out)
