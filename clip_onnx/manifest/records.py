"""The parts of a manifest, each a frozen dataclass that reads itself from parsed JSON and writes itself back.

``from_dict`` checks before it builds (a bundle may come from someone else:
a BundleError names the dotted field); ``to_dict`` gives the JSON layout
of format version 1 back.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from clip_onnx.manifest.schema import Schema, frozen, is_int, thaw

# The two graphs of a CLIP bundle, in the order every loop over them uses.
TOWERS = ("visual", "textual")
EMPTY: Mapping[str, Any] = MappingProxyType({})


def empty() -> Mapping[str, Any]:
    """The default of a record's mapping fields (a dataclass default must be hashable; a mappingproxy is not)."""
    return EMPTY


COUNT = (lambda v: v is None or (is_int(v) and v >= 0), "an int >= 0")
NUMBER = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a finite number")


class ModelKind(str, enum.Enum):
    """What a bundle holds: a two-tower CLIP model, or an image classifier (one graph giving logits)."""

    CLIP = "clip"
    CLASSIFIER = "classifier"

    @property
    def towers(self) -> tuple[str, ...]:
        """The graphs a bundle of this kind must have."""
        return TOWERS if self is ModelKind.CLIP else ("visual",)

    @classmethod
    def from_value(cls, value: Any, schema: Schema) -> ModelKind:
        if not isinstance(value, str) or value not in {k.value for k in cls}:
            raise schema.error(f"field 'kind' is {value!r:.80}; this clip-onnx reads {[k.value for k in cls]}")
        return cls(value)


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int

    @classmethod
    def from_dict(cls, record: Any, name: str, schema: Schema) -> FileRecord:
        record = schema.mapping({name: record}, name, f"files[{name!r}]")
        schema.fields(record, f"files[{name!r}].", _FILE_FIELDS)
        return cls(record["sha256"], record["size"])


_HEX = frozenset("0123456789abcdef")
_FILE_FIELDS = MappingProxyType(
    {
        "sha256": (lambda v: isinstance(v, str) and len(v) == 64 and set(v) <= _HEX, "a hex sha256"),
        "size": (lambda v: is_int(v) and v >= 0, "an int >= 0"),
    }
)


def trimmable(dynamic_axes: Mapping[str, Mapping[int, str]]) -> bool:
    """Whether a text batch may be cut to its longest prompt: the sequence axis of ``input_ids`` is symbolic."""
    return 1 in dynamic_axes.get("input_ids", {})


@dataclass(frozen=True)
class GraphSpec:
    """One tower's graph: its file, feed and output names, symbolic axes and how it was lowered."""

    file: str
    inputs: tuple[str, ...] = ()
    output: str = ""
    # input name -> {axis index: symbolic name}
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=empty)
    opset: int | None = None
    precision: str = "fp32"
    # The rest of the record as the exporter wrote it: the lowering's method, scales, fused
    # attention, int8 kernel proof, why a tower stayed fp32, "gate": "off".
    lowering: Mapping[str, Any] = field(default_factory=empty)

    def __post_init__(self) -> None:
        frozen(self, "inputs", "dynamic_axes", "lowering")

    @property
    def trimmable(self) -> bool:
        return trimmable(self.dynamic_axes)

    @property
    def gated(self) -> bool:
        """False for graphs lowered without the accuracy gate (``export_bundle(..., gate=False)``)."""
        return self.lowering.get("gate") != "off"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"file": self.file, "inputs": list(self.inputs), "output": self.output}
        d["dynamic_axes"] = {name: {str(a): n for a, n in axes.items()} for name, axes in self.dynamic_axes.items()}
        if self.opset is not None:
            d["opset"] = self.opset
        return {**d, "precision": self.precision, **thaw(self.lowering)}

    @classmethod
    def from_dict(cls, record: Mapping, tower: str, files: Mapping, schema: Schema) -> GraphSpec:
        name = schema.listed(record, "file", f"graphs.{tower}.file", files)
        schema.fields(record, f"graphs.{tower}.", _GRAPH_FIELDS, required=False)
        axes = {name: {int(a): n for a, n in named.items()} for name, named in record.get("dynamic_axes", {}).items()}
        return cls(
            file=name,
            inputs=record.get("inputs", ()),
            output=record.get("output", ""),
            dynamic_axes=axes,
            opset=record.get("opset"),
            precision=record.get("precision", "fp32"),
            lowering={k: v for k, v in record.items() if k != "file" and k not in _GRAPH_FIELDS},
        )


_GRAPH_FIELDS = MappingProxyType(
    {
        "inputs": (lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of names"),
        "output": (lambda v: isinstance(v, str), "a name"),
        "dynamic_axes": (
            lambda v: (
                isinstance(v, dict) and all(isinstance(a, dict) and all(k.isdigit() for k in a) for a in v.values())
            ),
            "an object of {axis index: name} objects",
        ),
        "opset": (lambda v: is_int(v) and v > 0, "an int > 0"),
        "precision": (lambda v: isinstance(v, str), "a precision name"),
    }
)


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer's record: its algorithm, its file in the bundle, and the options its module reads."""

    kind: str
    file: str
    # The whole record, as ``clip_onnx.runtime.tokenizers`` modules read it (ids, flags, lengths).
    options: Mapping[str, Any] = field(default_factory=empty)

    def __post_init__(self) -> None:
        frozen(self, "options")

    @property
    def context_length(self) -> int | None:
        return self.options.get("context_length")

    @property
    def pad_id(self) -> int:
        return int(self.options.get("pad_id") or 0)

    def to_dict(self) -> dict[str, Any]:
        return {**thaw(self.options), "kind": self.kind, "file": self.file}

    @classmethod
    def from_dict(cls, record: Mapping, files: Mapping, schema: Schema) -> TokenizerSpec:
        name = schema.listed(record, "file", "tokenizer.file", files)
        ids = {key: COUNT for key in record if key == "context_length" or key.endswith("_id")}
        schema.fields(record, "tokenizer.", {"kind": (lambda v: isinstance(v, str), "a tokenizer kind"), **ids})
        return cls(kind=record["kind"], file=name, options=record)


@dataclass(frozen=True)
class LabelsSpec:
    """A classifier's class names: a file of one name a line, in logit order."""

    file: str
    count: int | None = None

    @classmethod
    def from_dict(cls, record: Mapping, files: Mapping, schema: Schema) -> LabelsSpec:
        schema.fields(record, "labels.", {"count": COUNT}, required=False)
        return cls(schema.listed(record, "file", "labels.file", files), record.get("count"))


@dataclass(frozen=True)
class ModelInfo:
    name: str = ""
    family: str = ""
    source: str = ""
    config: Mapping[str, Any] = field(default_factory=empty)

    def __post_init__(self) -> None:
        frozen(self, "config")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "source": self.source, "config": thaw(self.config)}

    @classmethod
    def from_dict(cls, record: Any, schema: Schema) -> ModelInfo:
        record = schema.mapping({"model": record}, "model")
        text = {k: record[k] for k in ("name", "family", "source") if isinstance(record.get(k), str)}
        config = record.get("config")
        return cls(**text, config=config if isinstance(config, dict) else EMPTY)


@dataclass(frozen=True)
class SelfTestSpec:
    """Pictures and prompts with the eager model's outputs on them, replayed on the machine that runs the bundle.

    ``clip_onnx.runtime.self_test`` runs them through the full runtime path
    (decode, preprocessing, tokenizer, graphs or plans, provider) and compares
    with ``references``: what eager PyTorch gave at export.
    """

    images: tuple[str, ...]  # listed files: small PNGs, decoded the same everywhere
    texts: tuple[str, ...]
    references: Mapping[str, str]  # tower -> listed .npy, float32 [items, width], unnormalised
    at_load: Mapping[str, int]  # tower -> how many of its first items the load-time test runs
    export_cosine: Mapping[str, float] = field(default_factory=empty)  # tower -> min cosine the export machine measured

    def __post_init__(self) -> None:
        frozen(self, "images", "texts", "references", "at_load", "export_cosine")

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": list(self.images),
            "texts": list(self.texts),
            "references": dict(self.references),
            "at_load": dict(self.at_load),
            "export_cosine": dict(self.export_cosine),
        }

    @classmethod
    def from_dict(cls, record: Any, files: Mapping, schema: Schema) -> SelfTestSpec:
        record = schema.mapping({"self_test": record}, "self_test")
        images = schema.strings(record, "images", "self_test.images")
        for i, name in enumerate(images):
            schema.listed_name(name, f"self_test.images[{i}]", files)
        references = schema.mapping(record, "references", "self_test.references")
        for tower in references:
            schema.listed(references, tower, f"self_test.references.{tower}", files)
        at_load = schema.mapping(record, "at_load", "self_test.at_load")
        schema.fields(at_load, "self_test.at_load.", dict.fromkeys(at_load, COUNT))
        cosines = (
            schema.mapping(record, "export_cosine", "self_test.export_cosine") if "export_cosine" in record else {}
        )
        schema.fields(cosines, "self_test.export_cosine.", dict.fromkeys(cosines, NUMBER))
        return cls(
            images=images,
            texts=schema.strings(record, "texts", "self_test.texts"),
            references=references,
            at_load=at_load,
            export_cosine={t: float(c) for t, c in cosines.items()},
        )
