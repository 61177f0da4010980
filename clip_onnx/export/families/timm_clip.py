"""timm's CLIP-ViT ImageNet-1k classifiers: one image graph, ``pixel_values -> logits [batch, 1000]``.

Sources: a registered ``model.tag`` (weights from the hub repo ``timm/<name>``),
or a local directory in timm's hub layout (``config.json`` with an
``architecture``, plus ``model.safetensors`` or ``pytorch_model.bin``).
Preprocessing is whatever ``timm.data.resolve_data_config`` says for the
model, translated to a PreprocessSpec (see ``preprocess_from_timm``).
"""

from __future__ import annotations

import logging
import math
from importlib import resources
from pathlib import Path

import torch

from clip_onnx.errors import CheckpointError, ModelSourceError
from clip_onnx.export.families import _hub
from clip_onnx.export.families._hub import WEIGHT_FILES, read_json
from clip_onnx.export.families.base import ExportableModel, Tower
from clip_onnx.runtime.preprocess import INTERPOLATIONS, PreprocessSpec

log = logging.getLogger(__name__)

FAMILY = "timm_clip"
# timm crop_mode -> our crop mode; both resize to floor(image_size / crop_pct) first.
_CROP_MODES = {"center": "resize_then_crop", "squash": "squash_then_crop"}


def claims(source: str) -> bool:
    """A registered name or ``timm/<name>`` hub id, or a local directory in timm's hub layout."""
    if _hub.find_spec(source, FAMILY) is not None:
        return True
    return isinstance(read_json(Path(source).expanduser() / "config.json").get("architecture"), str)


def load(source: str, *, random_weights: bool = False) -> ExportableModel:
    import timm

    spec = _hub.find_spec(source, FAMILY)
    path = Path(source).expanduser()
    if random_weights:
        if spec is None:
            raise ModelSourceError(
                f"--random-weights needs a registered timm CLIP classifier name, got {source!r}; "
                f"registered: {', '.join(s.name for s in _hub.family_specs(FAMILY))}"
            )
        torch.manual_seed(0)
        model = timm.create_model(spec.name, pretrained=False)
        return exportable(spec.name, f"{spec.name} (random weights)", model)
    if path.is_dir():
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise ModelSourceError(
                f"local directory {source!r} is not a timm checkpoint: missing {' or '.join(WEIGHT_FILES)}"
            )
        try:
            model = timm.create_model(f"local-dir:{path}", pretrained=True)
        except Exception as exc:  # config, safetensors and state-dict errors have unrelated types
            raise CheckpointError(
                f"could not load the timm checkpoint in {source!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return exportable(path.name, source, model)
    if spec is None:
        raise ModelSourceError(f"{source!r} is not a registered timm CLIP classifier or a local directory")
    try:
        model = timm.create_model(spec.name, pretrained=True)
    except Exception as exc:  # hub, safetensors and state-dict errors have unrelated types
        raise _hub.hub_failure(
            f"timm model {source!r}",
            spec.hub_id,
            exc,
            f"a local directory in timm's hub layout (config.json, {' or '.join(WEIGHT_FILES)})",
        ) from None
    return exportable(spec.name, source, model)


def preprocess_from_timm(data_config: dict) -> PreprocessSpec:
    """The PreprocessSpec equal to ``timm.data.create_transform(**data_config)`` (eval)."""
    _, height, width = data_config["input_size"]
    if height != width:
        raise ModelSourceError(f"non-square input_size {data_config['input_size']} is not supported")
    mode = data_config.get("crop_mode") or "center"
    if mode not in _CROP_MODES:
        raise ModelSourceError(f"timm crop_mode {mode!r} is not supported; supported: {sorted(_CROP_MODES)}")
    if data_config["interpolation"] not in INTERPOLATIONS:
        raise ModelSourceError(f"timm interpolation {data_config['interpolation']!r} is not supported")
    # Same expression as timm.data.transforms_imagenet_eval, so the rounding agrees.
    crop_pct = data_config.get("crop_pct") or 0.875
    return PreprocessSpec(
        height,
        tuple(data_config["mean"]),
        tuple(data_config["std"]),
        interpolation=data_config["interpolation"],
        crop=_CROP_MODES[mode],
        resize_size=math.floor(height / crop_pct),
    )


def exportable(name: str, source: str, model: torch.nn.Module) -> ExportableModel:
    """Wrap a timm classifier: the model itself is the graph, its data config the preprocessing."""
    from timm.data import resolve_data_config

    model = model.eval()
    data_config = resolve_data_config({}, model=model)
    classes = int(model.num_classes)
    if classes < 1:
        raise ModelSourceError(f"{source!r} has no classifier head (num_classes={classes})")
    return ExportableModel(
        name=name,
        family=FAMILY,
        source=source,
        visual=Tower(
            "visual", _hub.VisualTower(model, "forward"), ("pixel_values",), "logits", {"pixel_values": {0: "batch"}}
        ),
        textual=None,
        logit_scale=1.0,
        embed_dim=classes,
        preprocess=preprocess_from_timm(data_config),
        tokenizer={},
        tokenizer_files={},
        sample_texts=(),
        config={
            "architecture": model.pretrained_cfg.get("architecture", name.split(".")[0]),
            "tag": model.pretrained_cfg.get("tag"),
            "num_classes": classes,
            "embed_dim": int(model.embed_dim),
            "depth": len(model.blocks),
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
        },
        kind="classifier",
        labels=class_names(model, classes),
    )


def class_names(model: torch.nn.Module, classes: int) -> tuple[str, ...]:
    """``model``'s class names in logit order: ImageNet-1k's for 1000 classes, else the checkpoint's own."""
    if classes == 1000:
        text = resources.files("clip_onnx").joinpath("assets/imagenet_classes.txt").read_text(encoding="utf-8")
        return tuple(text.splitlines())
    names = model.pretrained_cfg.get("label_names")
    descriptions = model.pretrained_cfg.get("label_descriptions") or {}
    if names and len(names) == classes:
        # timm's label_names may be ids (WordNet synsets); their descriptions read better.
        return tuple(str(descriptions.get(n, n)).replace("\n", " ") for n in names)
    raise ModelSourceError(
        f"the model has {classes} classes but no label_names in its config; "
        f"only ImageNet-1k heads (1000 classes) have built-in names"
    )
