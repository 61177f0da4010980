"""Family adapters, one module each.  A family is picked from the registry or by asking adapters who claims a source."""

from __future__ import annotations

import importlib

from clip_onnx.errors import ModelSourceError
from clip_onnx.export.families.base import ExportableModel
from clip_onnx.registry import find_model

# Module names under clip_onnx.export.families; each exposes claims(source) and load(source, random_weights=).
FAMILIES = ("ruclip", "chinese_clip", "timm_clip", "open_clip")


def load_model(source: str, *, random_weights: bool = False) -> ExportableModel:
    spec = find_model(source)
    if spec is not None:
        return _adapter(spec.family).load(source, random_weights=random_weights)
    for family in FAMILIES:
        adapter = _adapter(family)
        if adapter.claims(source):
            return adapter.load(source, random_weights=random_weights)
    raise ModelSourceError(
        f"don't know how to load {source!r}: it is not a registered name (see `clip-onnx models`), "
        f"a known hub id, or a local directory in a supported native layout"
    )


def _adapter(family: str):
    return importlib.import_module(f"clip_onnx.export.families.{family}")
