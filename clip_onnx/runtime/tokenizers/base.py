"""What every runtime tokenizer shares: input checks and the padded id matrix."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from clip_onnx.errors import BundleError, InputError


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


def cut_padding(feed: Mapping[str, np.ndarray], pad_id: int) -> dict[str, np.ndarray]:
    """``feed`` cut after the last column that any row uses: the attention mask's 1s, or ids other than ``pad_id``."""
    used = feed["attention_mask"] if "attention_mask" in feed else feed["input_ids"] != pad_id
    columns = used.any(axis=0).nonzero()[0]
    length = int(columns.max()) + 1 if columns.size else 1
    return {k: np.ascontiguousarray(v[:, :length]) for k, v in feed.items()}


def resolve_spec(kind: str, spec: Mapping, bundle_dir, keys: Sequence[str]) -> tuple[Path, dict]:
    """The tokenizer file a manifest spec names, inside ``bundle_dir``, and the spec's options among ``keys``."""
    if spec.get("kind") != kind:
        raise BundleError(f"tokenizer spec kind {spec.get('kind')!r} is not {kind!r}")
    name = spec.get("file")
    if not isinstance(name, str) or not name:
        raise BundleError(f"tokenizer spec needs a 'file' naming the {kind} model, got {name!r}")
    # A bundle must not point outside itself (a tampered or hand-edited spec).
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise BundleError(f"tokenizer file {name!r} must be a relative path inside the bundle {str(bundle_dir)!r}")
    return Path(bundle_dir) / name, {k: spec[k] for k in keys if k in spec}
