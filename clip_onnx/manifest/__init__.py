"""A bundle's manifest as typed data: ``manifest.json`` is read once (``Manifest.from_dict``) into frozen values.

Torch-free and dependency-free.  ``from_dict`` checks every field a loader
relies on before building anything, and ``to_dict`` writes the same JSON
layout back (format version 1).  Nothing outside this package and
``clip_onnx.bundle`` reads the raw JSON.
"""

from clip_onnx.manifest.document import FORMAT, FORMAT_VERSION, Manifest
from clip_onnx.manifest.records import (
    TOWERS,
    FileRecord,
    GraphSpec,
    LabelsSpec,
    ModelInfo,
    ModelKind,
    SelfTestSpec,
    TokenizerSpec,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TOWERS",
    "FileRecord",
    "GraphSpec",
    "LabelsSpec",
    "Manifest",
    "ModelInfo",
    "ModelKind",
    "SelfTestSpec",
    "TokenizerSpec",
]
