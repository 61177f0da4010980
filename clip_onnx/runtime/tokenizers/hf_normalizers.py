"""The normalizers of a Hugging Face ``tokenizer.json``, each a ``str -> str`` function built from its JSON object.

:data:`NORMALIZERS` maps each supported ``type`` to its builder; any other
type is refused with a BundleError naming it. ``Precompiled`` (SentencePiece's
charsmap) lives in ``charsmap``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

from clip_onnx.errors import BundleError
from clip_onnx.runtime.tokenizers.hf_file import build_from
from clip_onnx.runtime.tokenizers.text_cleaning import WHITE_SPACE

Normalizer = Callable[[str], str]

# tokenizers normalizes with Unicode tables older than Python 3.11's (Unicode
# 14): to it these code points are unassigned, so NFC/NFD/NFKC/NFKD leave them
# as they are and they block composition and reordering like any starter. They
# are the ones whose normalization, alone or after a combining mark, differs
# between the two (found by comparing tokenizers 0.23 with every code point;
# tests/export/test_unigram.py recomputes the list). Normalization mappings never
# change once assigned, so the list only grows with a newer Python.
_LEGACY_UNASSIGNED = (
    (0x7FD, 0x7FD),
    (0x898, 0x89F),
    (0x8CA, 0x8D3),
    (0x9FE, 0x9FE),
    (0xC3C, 0xC3C),
    (0xD3B, 0xD3C),
    (0xEBA, 0xEBA),
    (0x1715, 0x1715),
    (0x1ABF, 0x1ACE),
    (0x1DF6, 0x1DFA),
    (0x32FF, 0x32FF),
    (0xA7F2, 0xA7F4),
    (0xA82C, 0xA82C),
    (0xAB69, 0xAB69),
    (0x10781, 0x10785),
    (0x10787, 0x107B0),
    (0x107B2, 0x107BA),
    (0x10D24, 0x10D27),
    (0x10EAB, 0x10EAC),
    (0x10F46, 0x10F50),
    (0x10F82, 0x10F85),
    (0x11070, 0x11070),
    (0x1133B, 0x1133B),
    (0x1145E, 0x1145E),
    (0x11839, 0x1183A),
    (0x11938, 0x11938),
    (0x1193D, 0x1193E),
    (0x11943, 0x11943),
    (0x119E0, 0x119E0),
    (0x11A34, 0x11A34),
    (0x11A47, 0x11A47),
    (0x11A99, 0x11A99),
    (0x11D42, 0x11D42),
    (0x11D44, 0x11D45),
    (0x11D97, 0x11D97),
    (0x16FF0, 0x16FF1),
    (0x1E130, 0x1E136),
    (0x1E2AE, 0x1E2AE),
    (0x1E2EC, 0x1E2EF),
    (0x1F16C, 0x1F16C),
    (0x1FBF0, 0x1FBF9),
)
_LEGACY_RE = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _LEGACY_UNASSIGNED) + "]")


def _unicode_normalizer(form: Literal["NFC", "NFD", "NFKC", "NFKD"]) -> Normalizer:
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


def _sequence(spec: Mapping[str, Any], where: str) -> Normalizer:
    parts = spec.get("normalizers")
    if not isinstance(parts, list):
        raise BundleError(f"{where}: Sequence normalizer needs a 'normalizers' list")
    steps = [step for step in (build_normalizer(p, where) for p in parts) if step is not None]

    def sequence(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return sequence


def _precompiled(spec: Mapping[str, Any], where: str) -> Normalizer:
    # Imported here: only this normalizer needs the optional regex package.
    from clip_onnx.runtime.tokenizers.charsmap import PrecompiledCharsmap

    return PrecompiledCharsmap.from_base64(spec.get("precompiled_charsmap"), where)


def _strip(spec: Mapping[str, Any], where: str) -> Normalizer:
    left, right = spec.get("strip_left", True), spec.get("strip_right", True)
    if left and right:
        return lambda text: text.strip(WHITE_SPACE)
    if left:
        return lambda text: text.lstrip(WHITE_SPACE)
    if right:
        return lambda text: text.rstrip(WHITE_SPACE)
    return lambda text: text


def _prepend(spec: Mapping[str, Any], where: str) -> Normalizer:
    prefix = spec.get("prepend")
    if not isinstance(prefix, str):
        raise BundleError(f"{where}: Prepend normalizer needs a 'prepend' string")
    return lambda text: prefix + text if text else text


def _replace(spec: Mapping[str, Any], where: str) -> Normalizer:
    pattern, content = spec.get("pattern"), spec.get("content")
    if not isinstance(content, str) or not isinstance(pattern, dict) or len(pattern) != 1:
        raise BundleError(f"{where}: Replace normalizer needs 'pattern' {{String|Regex: ...}} and 'content'")
    ((how, value),) = pattern.items()
    if how == "String" and isinstance(value, str):
        if not value:
            raise BundleError(f"{where}: Replace normalizer has an empty pattern")
        return lambda text: text.replace(value, content)
    if how == "Regex" and isinstance(value, str):
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise BundleError(f"{where}: Replace normalizer's Regex {value!r} is not supported here: {exc}") from None
        return lambda text: compiled.sub(lambda _match: content, text)
    raise BundleError(f"{where}: Replace normalizer pattern must be {{'String': ...}} or {{'Regex': ...}}")


def _fixed(normalizer: Normalizer) -> Callable[[Mapping[str, Any], str], Normalizer]:
    return lambda spec, where: normalizer


# type -> builder(spec, where); the order is the one error messages list.
NORMALIZERS: Mapping[str, Callable[[Mapping[str, Any], str], Normalizer]] = MappingProxyType(
    {
        "Sequence": _sequence,
        "NFC": _fixed(_unicode_normalizer("NFC")),
        "NFD": _fixed(_unicode_normalizer("NFD")),
        "NFKC": _fixed(_unicode_normalizer("NFKC")),
        "NFKD": _fixed(_unicode_normalizer("NFKD")),
        "Lowercase": _fixed(_lowercase),
        "Strip": _strip,
        "StripAccents": _fixed(_strip_accents),
        "Replace": _replace,
        "Prepend": _prepend,
        "Precompiled": _precompiled,
    }
)


def build_normalizer(spec: object, where: str) -> Normalizer | None:
    """The normalizer a ``tokenizer.json`` describes (None for none); ``where`` names the file in errors."""
    return None if spec is None else build_from(NORMALIZERS, "normalizer", spec, where)
