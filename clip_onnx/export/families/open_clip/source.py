"""Which open_clip model a source names, and building it with open_clip's own ``create_model``."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import open_clip
import torch

from clip_onnx.errors import CheckpointError, ModelSourceError
from clip_onnx.export.families import _hub
from clip_onnx.registry import find_model

SCHEMAS = ("hf-hub:", "local-dir:")


@dataclass(frozen=True)
class Source:
    """``model`` is create_model's name (maybe with a schema); weights come from ``tag`` or ``checkpoint``."""

    model: str
    tag: str | None = None
    checkpoint: Path | None = None

    @property
    def has_schema(self) -> bool:
        return self.model.startswith(SCHEMAS)


def parse_source(source: str) -> Source | None:
    """Split ``source`` into open_clip's model name and weights; None when it names no open_clip model."""
    if source.startswith(SCHEMAS):
        return Source(source)
    model, at, weights = source.partition("@")
    if model not in open_clip.list_models():
        return None
    if not at:
        return Source(model)
    tags = open_clip.list_pretrained_tags_by_model(model)
    if weights.startswith(("/", "~", ".")) or "/" in weights or os.sep in weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelSourceError(f"checkpoint file {weights!r} (from {source!r}) does not exist")
        return Source(model, checkpoint=path)
    if weights.lower().replace("-", "_") not in tags:  # open_clip's own tag spelling rule
        raise ModelSourceError(
            f"{weights!r} is not a pretrained tag of open_clip model {model!r}; its tags are "
            f"{tags}; or give a checkpoint file as {model}@/path/to/open_clip_pytorch_model.bin"
        )
    return Source(model, tag=weights)


def create(
    src: Source, *, random_weights: bool = False, overrides: Mapping | None = None, device: str = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """``open_clip.create_model`` for ``src``; returns the eval-mode model and what the manifest records about it."""
    if not random_weights and not src.has_schema and src.tag is None and src.checkpoint is None:
        raise ModelSourceError(
            f"{src.model!r} names an architecture but no weights; use {src.model}@TAG with a tag from "
            f"{open_clip.list_pretrained_tags_by_model(src.model)}, {src.model}@/path/to/checkpoint, "
            f"or --random-weights"
        )
    overrides = dict(overrides or {})
    hf_overrides = overrides.pop("hf_config", {})
    base = _model_config(src)
    kwargs = {
        k: ({**base[k], **v} if isinstance(v, Mapping) and isinstance(base.get(k), Mapping) else v)
        for k, v in overrides.items()
    }
    tag_cfg = open_clip.get_pretrained_cfg(src.model, src.tag) if src.tag else {}
    call = {
        "pretrained": None if random_weights else (src.tag or (str(src.checkpoint) if src.checkpoint else None)),
        # Without weights nothing may be downloaded, HF base weights included (the CLIP checkpoint holds them).
        "load_weights": not random_weights,
        "pretrained_text": False,
        "device": device,
    }
    if tag_cfg.get("quick_gelu"):
        # open_clip only warns when a QuickGELU-trained tag (OpenAI's) meets a GELU config;
        # build the activation the weights were trained with.
        call["force_quick_gelu"] = True
    if random_weights and tag_cfg:
        # The preprocessing the tag's weights would bring, though the weights themselves are not loaded.
        call["force_preprocess_cfg"] = {
            k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg
        }
    text_cfg = dict(kwargs.get("text_cfg", base["text_cfg"]))
    known = _hf_configs().get(text_cfg.get("hf_model_name"))
    if hf_overrides and not known:
        raise ModelSourceError(
            f"hf_config overrides need a text tower listed in open_clip.json's hf_configs, "
            f"got {text_cfg.get('hf_model_name')!r}"
        )
    hf_config = {**known, **hf_overrides} if known else None
    torch.manual_seed(0)
    try:
        with _offline_hf_config(hf_config) as config_dir:
            if config_dir is not None:
                kwargs["text_cfg"] = {**text_cfg, "hf_model_name": config_dir, "hf_model_pretrained": False}
            model = open_clip.create_model(src.model, **call, **kwargs)
    except (RuntimeError, OSError, ValueError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        raise _load_failure(src, exc) from None
    info = {
        "model": src.model,
        "tag": src.tag,
        "checkpoint": str(src.checkpoint) if src.checkpoint else None,
        "quick_gelu": bool(base.get("quick_gelu") or call.get("force_quick_gelu")),
        "open_clip": open_clip.__version__,
        "model_cfg": {**base, **kwargs, "text_cfg": text_cfg},
        "hf_config": hf_config,
    }
    return model.eval(), info


def _model_config(src: Source) -> dict:
    try:
        cfg = open_clip.get_model_config(src.model)
    except Exception as exc:  # hub and file errors of many types
        raise _load_failure(src, exc) from None
    if not cfg:
        raise ModelSourceError(f"open_clip has no model config for {src.model!r}")
    return cfg


def _load_failure(src: Source, exc: Exception) -> ModelSourceError:
    if src.checkpoint:
        return CheckpointError(
            f"cannot load open_clip model {src.model!r} from checkpoint {str(src.checkpoint)!r}: "
            f"{type(exc).__name__}: {exc}"
        )
    spec = find_model(f"{src.model}@{src.tag}") if src.tag else None
    return _hub.hub_failure(
        f"open_clip model {src.model!r} with weights {src.tag or src.checkpoint}",
        spec.hub_id if spec else None,
        exc,
        f"a local checkpoint as {src.model}@/path/to/open_clip_pytorch_model.bin",
    )


@contextlib.contextmanager
def _offline_hf_config(hf_config: Mapping | None):
    """A directory holding ``hf_config`` as config.json, so open_clip's AutoConfig call needs no download.

    Yields None (open_clip then asks the hub) for text towers whose config the spec file does not hold.
    """
    if hf_config is None:
        yield None
        return
    from transformers import AutoConfig

    config = AutoConfig.for_model(**hf_config)
    with tempfile.TemporaryDirectory(prefix="clip-onnx-hf-") as directory:
        config.save_pretrained(directory)
        yield directory


def _hf_configs() -> Mapping[str, Mapping]:
    doc = json.loads(resources.files("clip_onnx.specs").joinpath("open_clip.json").read_text(encoding="utf-8"))
    return doc.get("hf_configs", {})
