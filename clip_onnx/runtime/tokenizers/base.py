"""What every runtime tokenizer shares: input checks and the padded id matrix."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from clip_onnx.errors import InputError


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, or raise InputError naming the offending value.

    A bare string is refused rather than iterated character by character, which
    would silently return one embedding per letter.
    """
    if isinstance(texts, (str, bytes)):
        raise InputError(f"expected a list of strings, got a single {type(texts).__name__} {texts!r:.60}; wrap it in a list")
    try:
        texts = list(texts)
    except TypeError:
        raise InputError(f"expected a list of strings, got {type(texts).__name__}") from None
    if not texts:
        raise InputError("expected at least one text, got an empty list")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text #{i} is {type(text).__name__} {text!r:.60}, expected str")
    return texts


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> np.ndarray:
    """Stack id lists into an int64 [N, length] matrix filled with ``pad_id``."""
    out = np.full((len(rows), length), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
