"""What the family adapters share: registry lookup, Hugging Face hub downloads and their failure message, and
the visual-tower wrapper every family exports."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from clip_onnx.errors import ModelSourceError
from clip_onnx.registry import ModelSpec, find_model, list_models

log = logging.getLogger(__name__)

# Weight files of the transformers and timm hub layouts, preferred first.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def family_specs(family: str) -> list[ModelSpec]:
    """The registered models of ``family``."""
    return [s for s in list_models() if s.family == family]


def find_spec(source: str, family: str) -> ModelSpec | None:
    """The registered model of ``family`` that ``source`` names, by its name or its hub id."""
    spec = find_model(source)
    if spec is not None and spec.family == family:
        return spec
    return next((s for s in family_specs(family) if s.hub_id == source), None)


def read_json(path: Path) -> dict:
    """``path``'s JSON object, or {} where it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def fetch(what: str, hub_id: str, patterns: Sequence[str], local: str) -> Path:
    """The local directory of ``hub_id``'s files matching ``patterns``, downloaded or from the hub cache.

    A failure raises ``hub_failure(what, hub_id, exc, local)``.
    """
    from huggingface_hub import snapshot_download

    log.info("fetching %s from the Hugging Face hub (HF_HUB_OFFLINE=%s)", hub_id, os.environ.get("HF_HUB_OFFLINE", "0"))
    try:
        return Path(snapshot_download(hub_id, allow_patterns=list(patterns)))
    except Exception as exc:  # huggingface_hub raises many unrelated types
        raise hub_failure(what, hub_id, exc, local) from None


def hub_failure(what: str, hub_id: str | None, exc: Exception, local: str) -> ModelSourceError:
    """The error for weights the hub did not give: what failed, and the three ways on.

    ``what`` names the model ("RuCLIP model 'x'"), ``local`` the local alternative
    ("a local directory containing ...").
    """
    repo = f" (hub repo {hub_id})" if hub_id else ""
    return ModelSourceError(
        f"could not load {what}{repo}: {type(exc).__name__}: {exc}. Either make the Hugging Face hub reachable "
        f"(or the files cached; HF_HUB_OFFLINE=1 uses the cache only), or pass {local}; "
        f"--random-weights exports the architecture without weights"
    )


class VisualTower(torch.nn.Module):
    """The image graph: ``pixel_values -> model.<method>(pixel_values)``, whatever the family's forward calls it.

    ``output`` picks one field where the method returns a ModelOutput.
    """

    def __init__(self, model: torch.nn.Module, method: str = "encode_image", output: str | None = None):
        super().__init__()
        self.model = model
        self.method = method
        self.output = output

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = getattr(self.model, self.method)(pixel_values)
        return getattr(out, self.output) if self.output else out
