"""The registries of the extension points: named models (JSON records in ``clip_onnx/specs/``) and backends.

Dependency-free, so ``clip-onnx models`` and the CLI's ``--backend`` choices
read them without importing numpy, the runtime or torch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType

from clip_onnx.errors import ModelSourceError


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: its family adapter, where its weights live and its architecture."""

    name: str
    family: str
    hub_id: str | None
    config: Mapping = field(default_factory=lambda: MappingProxyType({}))
    # A directory inside the package holding a native-layout checkpoint (the embedded demo model).
    asset: str | None = None
    description: str = ""


# Inference backend name -> "module:function" of its opener, which takes (bundle, tower, RunnerOptions) and
# returns a ``clip_onnx.runtime.backends.base.Runner``; ``clip_onnx.runtime.backends.open_runner`` imports
# it on first use. A new backend (OpenVINO, the CUDA provider's own) is one module and one line here.
BACKENDS: Mapping[str, str] = MappingProxyType(
    {
        "onnxruntime": "clip_onnx.runtime.backends.onnxruntime:open_runner",
        "tensorrt": "clip_onnx.runtime.backends.tensorrt:open_runner",
    }
)
# What ``backend="auto"`` tries, in order: the first that opens wins.
AUTO_ORDER = ("tensorrt", "onnxruntime")
BACKEND_CHOICES = (*BACKENDS, "auto")


@functools.cache
def _registry() -> Mapping[str, ModelSpec]:
    specs = {}
    for entry in sorted(resources.files("clip_onnx.specs").iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        doc = json.loads(entry.read_text(encoding="utf-8"))
        for name, record in doc["models"].items():
            specs[name] = ModelSpec(
                name=name,
                family=doc["family"],
                hub_id=record.get("hub_id"),
                config=MappingProxyType(dict(record.get("config", {}))),
                asset=record.get("asset"),
                description=record.get("description", ""),
            )
    return MappingProxyType(specs)


def list_models() -> list[ModelSpec]:
    """Every registered model, in the order of the spec files and their records (`clip-onnx models`)."""
    return list(_registry().values())


def find_model(name: str) -> ModelSpec | None:
    """The registered model called ``name``, or None."""
    return _registry().get(name)


def get_model(name: str) -> ModelSpec:
    """The registered model called ``name``; ModelSourceError listing the registered names otherwise."""
    spec = find_model(name)
    if spec is None:
        known = ", ".join(sorted(_registry()))
        raise ModelSourceError(f"unknown model name {name!r}; registered names: {known}")
    return spec
