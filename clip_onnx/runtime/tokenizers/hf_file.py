"""Reading a Hugging Face ``tokenizer.json`` as ``tokenizers`` does: its float parser, added tokens and piece types."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from clip_onnx.errors import BundleError
from clip_onnx.runtime.tokenizers.text_cleaning import WHITE_SPACE

_WHITE_SPACE = frozenset(WHITE_SPACE)
T = TypeVar("T")

# tokenizers reads tokenizer.json with serde_json's default float parser, which
# is not correctly rounded: it accumulates up to 19 significant digits in a u64,
# converts that to f64 and multiplies or divides once by a power of ten, rounding
# twice. About one vocab score in seven comes out one ulp away from Python's
# float(), enough to flip Viterbi ties, so scores are parsed the same way here.
_POW10 = tuple(float(f"1e{i}") for i in range(309))
_U64_MAX = 2**64 - 1
_JSON_NUMBER = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?")


def serde_json_f64(literal: str) -> float:
    """``literal`` as serde_json reads it (see above); falls back to ``float`` where serde_json would too."""
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


# How a vocabulary's scores are read: as tokenizers reads the file, or correctly rounded (a tokenizer built
# in memory from Python floats, saved with shortest round-trip literals).
SCORE_PARSERS: Mapping[str, Callable[[str], float]] = MappingProxyType({"serde_json": serde_json_f64, "exact": float})


def read_json(path: Path, parse_float: Callable[[str], float]) -> dict[str, Any]:
    """The JSON object in ``path``, floats read with ``parse_float``; BundleError naming the file otherwise."""
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


Builder = Callable[[Mapping[str, Any], str], T]


def build_from(
    registry: Mapping[str, Builder[T]], what: str, spec: object, where: str, supported: str | None = None
) -> T:
    """``registry[spec["type"]](spec, where)`` for one pipeline piece (``what``) of the file ``where`` names.

    BundleError names the piece and its type when the spec is not an object
    with a type this runtime supports (listed as ``supported``, or the registry's keys).
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise BundleError(f"{where}: {what} must be an object with a 'type', got {spec!r:.80}")
    builder = registry.get(spec["type"])
    if builder is None:
        raise BundleError(
            f"{where}: {what} {spec['type']!r} is not supported by this runtime "
            f"(supported: {supported or ', '.join(registry)})"
        )
    return builder(spec, where)


class AddedToken:
    """One of ``added_tokens``: text cut out before the model runs, which becomes its own id."""

    __slots__ = ("id", "content", "lstrip", "rstrip", "normalized")

    def __init__(self, spec: Mapping[str, Any], where: str):
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


class AddedTokenSplitter:
    """Cuts text at added tokens, leftmost-longest (the longest alternative first at one start).

    With ``normalize``, the tokens are looked for by their normalized content,
    in normalized text, as tokenizers does for tokens marked ``normalized``.
    """

    def __init__(self, tokens: list[AddedToken], normalize: Callable[[str], str] | None = None):
        self._by_content: dict[str, AddedToken] = {}
        for token in tokens:
            content = normalize(token.content) if normalize else token.content
            if content:
                self._by_content[content] = token  # a later duplicate wins, as in tokenizers' map
        ordered = sorted(self._by_content, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def split(self, text: str) -> list[tuple[str, AddedToken | None]]:
        """[(piece, its added token or None)], empty pieces dropped."""
        if self._pattern is None or not text:
            return [(text, None)] if text else []
        out: list[tuple[str, AddedToken | None]] = []
        start_offset = 0
        for match in self._pattern.finditer(text):
            token = self._by_content[match.group(0)]
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
