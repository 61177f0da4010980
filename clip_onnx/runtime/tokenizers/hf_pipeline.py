"""The pre-tokenizers and post-processors of a Hugging Face ``tokenizer.json``, as registries ``{type: builder}``.

A pre-tokenizer is a list of steps, each mapping ``[(word, starts the text)]``
to the same; a post-processor is the ids it puts before and after a single
sequence. Any type missing from :data:`PRE_TOKENIZERS` or
:data:`POST_PROCESSORS` is refused with a BundleError naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from clip_onnx.errors import BundleError
from clip_onnx.runtime.tokenizers.hf_file import build_from
from clip_onnx.runtime.tokenizers.text_cleaning import WHITE_SPACE

Words = list[tuple[str, bool]]
Step = Callable[[Words], Words]
SpecialIds = tuple[tuple[int, ...], tuple[int, ...]]

_WHITESPACE_RUN = re.compile("[" + re.escape(WHITE_SPACE) + "]+")


class _Metaspace:
    """Replaces " " by the mark, prepends the mark per ``prepend_scheme``, and splits before every mark."""

    def __init__(self, spec: Mapping[str, Any], where: str):
        replacement = spec.get("replacement", "\u2581")
        if not isinstance(replacement, str) or len(replacement) != 1:
            raise BundleError(f"{where}: Metaspace replacement must be one character, got {replacement!r}")
        scheme = spec.get("prepend_scheme")
        if scheme is None:  # files written before tokenizers 0.15
            scheme = "always" if spec.get("add_prefix_space", True) else "never"
        if scheme not in ("always", "first", "never"):
            raise BundleError(f"{where}: Metaspace prepend_scheme {scheme!r} is not one of always, first, never")
        self.mark, self.scheme, self.split = replacement, scheme, bool(spec.get("split", True))

    def __call__(self, words: Words) -> Words:
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


def _whitespace_split(words: Words) -> Words:
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


def _sequence(spec: Mapping[str, Any], where: str) -> list[Step]:
    inner = spec.get("pretokenizers")
    if not isinstance(inner, list):
        raise BundleError(f"{where}: pre_tokenizer Sequence needs a 'pretokenizers' list")
    return [step for part in inner for step in build_pre_tokenizer(part, where)]


# type -> builder(spec, where) of the steps; the order is the one error messages list.
PRE_TOKENIZERS: Mapping[str, Callable[[Mapping[str, Any], str], list[Step]]] = MappingProxyType(
    {
        "Metaspace": lambda spec, where: [_Metaspace(spec, where)],
        "WhitespaceSplit": lambda spec, where: [_whitespace_split],
        "Sequence": _sequence,
    }
)


def build_pre_tokenizer(spec: object, where: str) -> list[Step]:
    """The pre-tokenizer as a list of steps (none for no pre-tokenizer); ``where`` names the file in errors."""
    if spec is None:
        return []
    supported = f"{', '.join(t for t in PRE_TOKENIZERS if t != 'Sequence')}, and a Sequence of them"
    return build_from(PRE_TOKENIZERS, "pre_tokenizer", spec, where, supported)


def _cls_sep(spec: Mapping[str, Any], where: str) -> SpecialIds:
    """RobertaProcessing and BertProcessing: ``cls`` before, ``sep`` after, each given as [token, id]."""
    try:
        return (int(spec["cls"][1]),), (int(spec["sep"][1]),)
    except (KeyError, IndexError, TypeError, ValueError):
        raise BundleError(f"{where}: {spec.get('type')} needs 'cls' and 'sep' as [token, id]") from None


def _template(spec: Mapping[str, Any], where: str) -> SpecialIds:
    """TemplateProcessing's ``single`` template: special tokens around exactly one ``$A``."""
    single, specials = spec.get("single"), spec.get("special_tokens", {})
    if not isinstance(single, list) or not isinstance(specials, dict):
        raise BundleError(f"{where}: TemplateProcessing needs a 'single' list and 'special_tokens'")
    before: list[int] = []
    after: list[int] = []
    seen_sequence = False
    for item in single:
        if not isinstance(item, dict) or len(item) != 1:
            raise BundleError(f"{where}: bad TemplateProcessing item {item!r:.80}")
        ((what, body),) = item.items()
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


# type -> builder(spec, where) of (ids before, ids after); the order is the one error messages list.
POST_PROCESSORS: Mapping[str, Callable[[Mapping[str, Any], str], SpecialIds]] = MappingProxyType(
    {"TemplateProcessing": _template, "RobertaProcessing": _cls_sep, "BertProcessing": _cls_sep}
)


def build_post_processor(spec: object, where: str) -> SpecialIds:
    """The ids the post-processor puts before and after the sequence (none for no post-processor)."""
    if spec is None:
        return (), ()
    return build_from(POST_PROCESSORS, "post_processor", spec, where)
