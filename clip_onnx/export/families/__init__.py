"""Family adapters, one module each.  A family is picked from the registry or by asking adapters who claims a source."""

from __future__ import annotations

import importlib
from typing import cast

from clip_onnx.errors import ModelSourceError
from clip_onnx.export.families.base import ExportableModel, FamilyAdapter
from clip_onnx.registry import find_model

# Modules under clip_onnx.export.families, each a FamilyAdapter; the order is the order sources are offered in.
FAMILIES = ("ruclip", "chinese_clip", "timm_clip", "open_clip")


def load_model(source: str, *, random_weights: bool = False) -> ExportableModel:
    """Load ``source`` (a registered name, else the first adapter in FAMILIES that claims it) for export."""
    spec = find_model(source)
    if spec is not None:
        return adapter(spec.family).load(source, random_weights=random_weights)
    for family in FAMILIES:
        candidate = adapter(family)
        if candidate.claims(source):
            return candidate.load(source, random_weights=random_weights)
    raise ModelSourceError(
        f"don't know how to load {source!r}: it is not a registered name (see `clip-onnx models`), "
        f"a known hub id, or a local directory in a supported native layout"
    )


def adapter(family: str) -> FamilyAdapter:
    """The adapter module of ``family`` (one of FAMILIES)."""
    if family not in FAMILIES:
        raise ModelSourceError(f"no adapter for model family {family!r}; this clip-onnx has {', '.join(FAMILIES)}")
    return cast(FamilyAdapter, importlib.import_module(f"clip_onnx.export.families.{family}"))
