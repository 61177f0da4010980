"""``Manifest``: the whole of ``manifest.json`` as one frozen value, read once and passed around."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from clip_onnx.errors import BundleError, InputError
from clip_onnx.manifest.records import (
    EMPTY,
    FileRecord,
    GraphSpec,
    LabelsSpec,
    ModelInfo,
    ModelKind,
    SelfTestSpec,
    TokenizerSpec,
    empty,
)
from clip_onnx.manifest.schema import Schema, check_file_name, frozen, is_int, thaw
from clip_onnx.preprocess_spec import MAX_IMAGE_SIDE, PreprocessSpec
from clip_onnx.texts import check_templates
from clip_onnx.thresholds import THRESHOLDS

FORMAT = "clip-onnx-bundle"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """Everything a bundle says about itself; build with ``from_dict`` (checked) or directly (the exporter)."""

    kind: ModelKind
    graphs: Mapping[str, GraphSpec]
    preprocess: PreprocessSpec
    model: ModelInfo = field(default_factory=ModelInfo)
    files: Mapping[str, FileRecord] = field(default_factory=empty)
    logit_scale: float | None = None
    embed_dim: int | None = None
    tokenizer: TokenizerSpec | None = None
    sample_texts: tuple[str, ...] = ()
    templates: tuple[str, ...] | None = None
    labels: LabelsSpec | None = None
    # One record per gate that ran at export (clip_onnx.parity.ParityReport.to_dict), as written.
    parity: tuple[Mapping[str, Any], ...] = ()
    gate_inputs: Mapping[str, Any] | None = None
    # Where the export's gates ran: CPU, its int8 kernel path, library versions (clip_onnx.machine).
    gate_machine: Mapping[str, Any] | None = None
    export: Mapping[str, Any] = field(default_factory=empty)
    self_test: SelfTestSpec | None = None
    # Top-level keys this version does not know, kept so that a read-modify-write loses nothing.
    extra: Mapping[str, Any] = field(default_factory=empty)

    def __post_init__(self) -> None:
        # Graph and file records are frozen dataclasses already: only their mappings need a read-only shell.
        for name in ("graphs", "files"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        frozen(self, "sample_texts", "templates", "parity", "gate_inputs", "gate_machine", "export", "extra")

    def graph(self, tower: str) -> GraphSpec:
        try:
            return self.graphs[tower]
        except KeyError:
            raise BundleError(f"bundle has no {tower!r} graph; it has {sorted(self.graphs)}") from None

    def graph_files(self, tower: str) -> list[str]:
        """The files of one tower's graph: the .onnx and its external data (``visual.onnx.data``)."""
        graph = self.graph(tower).file
        return [name for name in self.files if name == graph or name.startswith(graph + ".")]

    def sha256(self, name: str) -> str:
        try:
            return self.files[name].sha256
        except KeyError:
            raise BundleError(f"manifest lists no file {name!r}") from None

    def lowering_min_cosine(self, precision: str) -> float:
        """The cosine the fp16/int8 gate held the ``precision`` graphs to: the export's own, else the table's."""
        chosen = (self.gate_inputs or {}).get("thresholds")
        if isinstance(chosen, Mapping) and isinstance(chosen.get("min_cosine"), (int, float)):
            return float(chosen["min_cosine"])
        if precision not in THRESHOLDS:
            raise BundleError(f"graphs of precision {precision!r} have no gate in this clip-onnx; upgrade it")
        return THRESHOLDS[precision].min_cosine

    @property
    def lowered(self) -> bool:
        """Whether any graph runs below fp32."""
        return any(graph.precision != "fp32" for graph in self.graphs.values())

    def with_files(self, files: Mapping[str, FileRecord]) -> Manifest:
        return replace(self, files=files)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, in the layout every clip-onnx since format version 1 reads."""
        clip = self.kind is ModelKind.CLIP
        d: dict[str, Any] = {"kind": self.kind.value, "model": self.model.to_dict()}
        if clip:
            d.update(logit_scale=self.logit_scale, embed_dim=self.embed_dim)
        d["preprocess"] = self.preprocess.to_dict()
        if self.tokenizer is not None:
            d["tokenizer"] = self.tokenizer.to_dict()
        if clip:
            d["sample_texts"] = list(self.sample_texts)
        d["graphs"] = {tower: graph.to_dict() for tower, graph in self.graphs.items()}
        d["parity"] = [thaw(report) for report in self.parity]
        optional = {"gate_inputs": self.gate_inputs, "gate_machine": self.gate_machine}
        d.update({key: thaw(value) for key, value in optional.items() if value is not None})
        d["export"] = thaw(self.export)
        if self.templates is not None:
            d["templates"] = list(self.templates)
        if self.labels is not None:
            d["labels"] = {"file": self.labels.file, "count": self.labels.count}
        if self.self_test is not None:
            d["self_test"] = self.self_test.to_dict()
        files = {name: {"sha256": r.sha256, "size": r.size} for name, r in self.files.items()}
        return {**thaw(self.extra), **d, "format": FORMAT, "format_version": FORMAT_VERSION, "files": files}

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> Manifest:
        """Check ``data`` (parsed JSON) and build the manifest; BundleError names the first unusable field."""
        schema = Schema(where)
        schema.document(data, FORMAT, FORMAT_VERSION)
        files = _files(data, schema)
        kind = ModelKind.from_value(data.get("kind", "clip"), schema)
        graphs = schema.mapping(data, "graphs")
        if set(graphs) - set(kind.towers):
            raise schema.error(f"field 'graphs' has {sorted(graphs)}; a {kind.value} bundle has {list(kind.towers)}")
        specs = {
            t: GraphSpec.from_dict(schema.mapping(graphs, t, f"graphs.{t}"), t, files, schema) for t in kind.towers
        }
        manifest = cls(
            kind=kind,
            graphs=specs,
            preprocess=_preprocess(schema.mapping(data, "preprocess"), schema),
            model=ModelInfo.from_dict(data["model"], schema) if "model" in data else ModelInfo(),
            files=files,
            parity=schema.one(data, "parity", "parity", _is_list, "a list") if "parity" in data else (),
            gate_inputs=_optional_object(data, "gate_inputs", schema),
            gate_machine=_optional_object(data, "gate_machine", schema),
            export=_optional_object(data, "export", schema) or EMPTY,
            self_test=SelfTestSpec.from_dict(data["self_test"], files, schema) if "self_test" in data else None,
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )
        if kind is ModelKind.CLASSIFIER:
            return replace(manifest, labels=LabelsSpec.from_dict(schema.mapping(data, "labels"), files, schema))
        schema.fields(data, "", _CLIP_FIELDS)
        return replace(
            manifest,
            logit_scale=float(data["logit_scale"]),
            embed_dim=data["embed_dim"],
            tokenizer=TokenizerSpec.from_dict(schema.mapping(data, "tokenizer"), files, schema),
            sample_texts=schema.strings(data, "sample_texts", "sample_texts") if "sample_texts" in data else (),
            templates=_templates(data["templates"], schema) if "templates" in data else None,
        )


_KNOWN = frozenset(
    "kind model logit_scale embed_dim preprocess tokenizer sample_texts graphs parity gate_inputs gate_machine "
    "export templates labels self_test format format_version files".split()
)
_CLIP_FIELDS = MappingProxyType(
    {
        "logit_scale": (
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
            "a finite number > 0",
        ),
        "embed_dim": (lambda v: is_int(v) and v > 0, "an int > 0"),
    }
)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _files(data: Mapping, schema: Schema) -> Mapping[str, FileRecord]:
    records = {}
    for name, record in schema.mapping(data, "files").items():
        check_file_name(name, schema.where)
        records[name] = FileRecord.from_dict(record, name, schema)
    return records


def _optional_object(data: Mapping, key: str, schema: Schema) -> Mapping[str, Any] | None:
    return schema.mapping(data, key) if key in data else None


def _preprocess(record: Mapping, schema: Schema) -> PreprocessSpec:
    side = (lambda v: v is None or (is_int(v) and 0 < v <= MAX_IMAGE_SIDE), f"an int from 1 to {MAX_IMAGE_SIDE}")
    schema.fields(record, "preprocess.", {"image_size": side, "resize_size": side}, required=False)
    try:
        return PreprocessSpec.from_dict(record)
    except BundleError as exc:
        raise schema.error(f"field 'preprocess': {exc}") from None


def _templates(value: Any, schema: Schema) -> tuple[str, ...]:
    try:
        return check_templates(value)
    except InputError as exc:
        raise schema.error(f"field 'templates': {exc}") from None
