"""Checks of the texts and prompt templates callers pass: dependency-free, so the manifest can use them too.

A bundle's manifest carries templates, and the runtime takes them from users;
both are checked here, below every other module, so neither imports the other.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from clip_onnx.errors import InputError

__all__ = ["check_templates", "check_texts"]


def check_texts(texts: Sequence[str], what: str = "text") -> list[str]:
    """Return ``texts`` as a list, or raise InputError naming the offending value.

    A bare string is refused rather than iterated character by character, which
    would silently return one embedding per letter.  ``what`` names the items in
    messages ("text", "template").
    """
    if isinstance(texts, (str, bytes)):
        raise InputError(
            f"expected a list of {what}s, got a single {type(texts).__name__} {texts!r:.60}; wrap it in a list"
        )
    try:
        texts = list(texts)
    except TypeError:
        raise InputError(f"expected a list of {what}s, got {type(texts).__name__}") from None
    if not texts:
        raise InputError(f"expected at least one {what}, got an empty list")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{what} #{i} is {type(text).__name__} {text!r:.60}, expected str")
    return texts


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """``templates`` as a tuple, or InputError naming the first one that ``prompts_for`` cannot fill.

    Each must hold exactly one ``{}`` (where the label goes) and no other replacement
    field: ``"{} и {}"``, ``"{x} {}"`` or an unbalanced ``"{"`` would make ``str.format``
    raise, and ``"{0}"`` or ``"{!r}"`` would not write the label as given.
    """
    items = tuple(check_texts(templates, what="template"))
    for template in items:
        try:
            fields = [
                (name, spec, conversion)
                for _, name, spec, conversion in string.Formatter().parse(template)
                if name is not None
            ]
        except ValueError as exc:
            raise InputError(
                f"template {template!r:.80} is not a format string ({exc}); write a literal brace as '{{{{' or '}}}}'"
            ) from None
        if fields != [("", "", None)]:
            raise InputError(
                f"template {template!r:.80} must contain exactly one '{{}}' where the label goes and "
                "no other replacement field; write a literal brace as '{{' or '}}'"
            )
    return items
