"""The manifest's schema: what a loader may rely on in ``manifest.json`` before it uses any field.

Torch-free and dependency-free.  A bundle may come from someone else, so every
field is checked for presence and type, and every file a loader opens must be
listed with its sha256; errors name the dotted field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from clip_onnx.errors import BundleError, InputError

FORMAT = "clip-onnx-bundle"
FORMAT_VERSION = 1
# The two graphs of a CLIP bundle, in the order every loop over them uses.
TOWERS = ("visual", "textual")
# The graphs each kind of bundle must have.
KINDS = MappingProxyType({"clip": TOWERS, "classifier": ("visual",)})
# Output sizes a preprocess spec may ask for; larger ones are a typo or an attempt to exhaust memory.
MAX_IMAGE_SIDE = 8192
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_manifest(manifest: Any, where: str) -> None:
    """Raise BundleError naming the first field of ``manifest`` that a loader could not use as it is."""
    if not isinstance(manifest, dict):
        kind = {list: "array", str: "string", bool: "boolean"}.get(type(manifest), type(manifest).__name__)
        raise BundleError(f"{where}: a manifest is a JSON object, got a JSON {kind}")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{where}: format is {manifest.get('format')!r:.80}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{where}: bundle format version {manifest.get('format_version')!r:.80} is not supported "
            f"by this clip-onnx (reads version {FORMAT_VERSION}); re-export or upgrade clip-onnx"
        )
    schema = _Schema(where)
    files = schema.mapping(manifest, "files")
    for name in files:
        _check_file_name(name, where)
        schema.fields(schema.mapping(files, name, f"files[{name!r}]"), f"files[{name!r}].", _FILE_FIELDS)
    kind = manifest.get("kind", "clip")
    if not isinstance(kind, str) or kind not in KINDS:
        raise BundleError(f"{where}: field 'kind' is {kind!r:.80}; this clip-onnx reads {sorted(KINDS)}")
    graphs = schema.mapping(manifest, "graphs")
    if set(graphs) - set(KINDS[kind]):
        raise BundleError(f"{where}: field 'graphs' has {sorted(graphs)}; a {kind} bundle has {list(KINDS[kind])}")
    for tower in KINDS[kind]:
        graph = schema.mapping(graphs, tower, f"graphs.{tower}")
        schema.listed(graph, "file", f"graphs.{tower}.file", files)
        schema.fields(graph, f"graphs.{tower}.", _GRAPH_FIELDS, required=False)
    schema.fields(schema.mapping(manifest, "preprocess"), "preprocess.", _PREPROCESS_FIELDS, required=False)
    if kind == "classifier":
        labels = schema.mapping(manifest, "labels")
        schema.listed(labels, "file", "labels.file", files)
        schema.fields(labels, "labels.", {"count": _COUNT}, required=False)
        return
    schema.fields(manifest, "", _CLIP_FIELDS)
    tokenizer = schema.mapping(manifest, "tokenizer")
    schema.listed(tokenizer, "file", "tokenizer.file", files)
    ids = {key: _COUNT for key in tokenizer if key == "context_length" or key.endswith("_id")}
    schema.fields(tokenizer, "tokenizer.", {"kind": (lambda v: isinstance(v, str), "a tokenizer kind"), **ids})
    if "templates" in manifest:
        from clip_onnx.runtime.zero_shot import check_templates  # not at the top: the runtime imports this module

        try:
            check_templates(manifest["templates"])
        except InputError as exc:
            raise BundleError(f"{where}: field 'templates': {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_COUNT = (lambda v: v is None or (_is_int(v) and v >= 0), "an int >= 0")
_FILE_FIELDS = MappingProxyType(
    {
        "sha256": (lambda v: isinstance(v, str) and _SHA256.fullmatch(v), "a hex sha256"),
        "size": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    }
)
_GRAPH_FIELDS = MappingProxyType(
    {
        "inputs": (lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of names"),
        "output": (lambda v: isinstance(v, str), "a name"),
        "dynamic_axes": (
            lambda v: isinstance(v, dict) and all(isinstance(a, dict) for a in v.values()),
            "an object of {axis: name} objects",
        ),
        "opset": (lambda v: _is_int(v) and v > 0, "an int > 0"),
    }
)
_SIDE = (lambda v: v is None or (_is_int(v) and 0 < v <= MAX_IMAGE_SIDE), f"an int from 1 to {MAX_IMAGE_SIDE}")
_PREPROCESS_FIELDS = MappingProxyType({"image_size": _SIDE, "resize_size": _SIDE})
_CLIP_FIELDS = MappingProxyType(
    {
        "logit_scale": (
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
            "a finite number > 0",
        ),
        "embed_dim": (lambda v: _is_int(v) and v > 0, "an int > 0"),
    }
)


class _Schema:
    """Field checks that raise BundleError naming the manifest and the dotted field."""

    def __init__(self, where: str):
        self.where = where

    def fields(self, obj: Mapping, prefix: str, table: Mapping, *, required: bool = True) -> None:
        """Check ``obj[key]`` with each (valid, expected) of ``table``; absent keys only when ``required``."""
        for key, (valid, expected) in table.items():
            if key not in obj:
                if required:
                    raise BundleError(f"{self.where}: field '{prefix + key}' is missing; it must be {expected}")
            elif not valid(obj[key]):
                text = repr(obj[key])
                raise BundleError(
                    f"{self.where}: field '{prefix + key}' must be {expected}, got "
                    f"{type(obj[key]).__name__} {text if len(text) <= 80 else text[:77] + '...'}"
                )

    def one(self, obj: Mapping, key: str, name: str, valid: Callable[[Any], Any], expected: str) -> Any:
        """``obj[key]``, checked under the dotted ``name``."""
        self.fields({name: obj[key]} if key in obj else {}, "", {name: (valid, expected)})
        return obj[key]

    def mapping(self, obj: Mapping, key: str, name: str | None = None) -> dict:
        return self.one(obj, key, name or key, lambda v: isinstance(v, dict), "a JSON object")

    def listed(self, obj: Mapping, key: str, name: str, files: Mapping) -> str:
        value = self.one(obj, key, name, lambda v: isinstance(v, str) and v, "a file name")
        if value not in files:
            raise BundleError(
                f"{self.where}: field '{name}' names {value!r:.80}, which 'files' does not list; "
                "every file the runtime opens must be listed with its sha256"
            )
        return value


def _check_file_name(name: str, where: str) -> None:
    if not name or "\0" in name or name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        raise BundleError(
            f"{where}: manifest names a file outside the bundle or not a plain relative path: {name!r:.120}"
        )
