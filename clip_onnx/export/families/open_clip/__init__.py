"""OpenAI CLIP and OpenCLIP models, exported through open_clip's own model code.

Sources this adapter accepts (``clip-onnx export SOURCE``):

``MODEL@TAG``
    An open_clip model config and one of its pretrained tags, loaded as
    ``open_clip.create_model(MODEL, pretrained=TAG)``, e.g. ``ViT-B-32@openai``.
    The registered names (``clip_onnx/specs/open_clip.json``) are such pairs;
    any other pair in ``open_clip.list_pretrained()`` works the same way.
``MODEL@PATH``
    The MODEL architecture with weights from a local checkpoint file
    (``create_model(MODEL, pretrained=PATH)``), e.g.
    ``ViT-B-32@/data/open_clip_pytorch_model.bin``. What follows "@" is a path
    when it contains "/" or the OS separator, or starts with "~" or ".";
    tags never do.
``hf-hub:ORG/REPO``, ``local-dir:DIR``
    open_clip's own schemas: ``open_clip_config.json`` plus weights from a
    Hugging Face hub repo or a local directory.
``MODEL``
    With ``--random-weights`` only: the bare architecture.

``--random-weights`` builds ``create_model(MODEL, pretrained=None)`` from
open_clip's bundled config, with the preprocessing and activation the tag
would bring, and downloads nothing: HF text towers take their config from
``hf_configs`` in the spec file and a Unigram tokenizer generated here.
"""

from __future__ import annotations

from collections.abc import Mapping

import open_clip
from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

from clip_onnx.errors import InputError, ModelSourceError
from clip_onnx.export.families._hub import VisualTower
from clip_onnx.export.families.base import ExportableModel, Tower
from clip_onnx.export.families.open_clip.source import SCHEMAS, Source, create, parse_source
from clip_onnx.export.families.open_clip.tokenizer import (
    DEMO_VOCAB_SIZE,
    MULTILINGUAL_TEXTS,
    SAMPLE_TEXTS,
    demo_unigram_json,
    tokenizer_for,
)
from clip_onnx.export.families.open_clip.towers import check_text_tower, text_tower
from clip_onnx.registry import find_model
from clip_onnx.runtime.preprocess import PreprocessSpec
from clip_onnx.runtime.tokenizers.unigram import UnigramTokenizer

__all__ = [
    "DEMO_VOCAB_SIZE",
    "SCHEMAS",
    "TEMPLATES",
    "Source",
    "claims",
    "create",
    "demo_unigram_json",
    "exportable",
    "load",
    "parse_source",
    "preprocess_spec",
    "text_tower",
]

# open_clip's prompt set for zero-shot ImageNet, as "{}" templates for the manifest.
TEMPLATES = tuple(t("{}") for t in SIMPLE_IMAGENET_TEMPLATES)


def claims(source: str) -> bool:
    try:
        return parse_source(source) is not None
    except ModelSourceError:
        return True  # ours, but malformed: load() raises the helpful message


def load(source: str, *, random_weights: bool = False, overrides: Mapping | None = None) -> ExportableModel:
    """Load ``source`` (see the module docstring); ``overrides`` merge into open_clip's config (tests shrink models)."""
    src = parse_source(source)
    if src is None:
        raise ModelSourceError(
            f"{source!r} names no open_clip model; use MODEL@TAG, MODEL@PATH, hf-hub:ORG/REPO "
            f"or local-dir:DIR with a MODEL from open_clip.list_models()"
        )
    model, info = create(src, random_weights=random_weights, overrides=overrides)
    spec = find_model(source)
    name = spec.name if spec else source
    return exportable(
        name, f"{name} (random weights)" if random_weights else source, model, info, random_weights=random_weights
    )


def exportable(name: str, source: str, model, info: dict, *, random_weights: bool) -> ExportableModel:
    tower, sequence = text_tower(model)
    text_cfg = info["model_cfg"]["text_cfg"]
    tok_spec, files, tokenizer, keep = tokenizer_for(model, text_cfg, info, random_weights)
    samples = MULTILINGUAL_TEXTS if tok_spec["kind"] == UnigramTokenizer.kind else SAMPLE_TEXTS
    # Four prompts, the longest among them, keep this check cheap on full-size towers.
    probe = [*samples[:3], max(samples, key=len)]
    check_text_tower(model, tower, tokenizer(probe), sequence["dynamic"], int(tok_spec["pad_id"]))
    return ExportableModel(
        name=name,
        family="open_clip",
        source=source,
        visual=Tower("visual", VisualTower(model), ("pixel_values",), "image_embeds", {"pixel_values": {0: "batch"}}),
        textual=tower,
        logit_scale=float(model.logit_scale.detach().exp()),
        embed_dim=int(info["model_cfg"]["embed_dim"]),
        preprocess=preprocess_spec(open_clip.get_model_preprocess_cfg(model)),
        tokenizer=tok_spec,
        tokenizer_files=files,
        sample_texts=samples,
        # ``keep`` holds a generated tokenizer's temporary directory until the model is dropped.
        tokenize=lambda texts, _keep=keep: tokenizer(texts),
        config={**info, "text_sequence": sequence},
        templates=TEMPLATES,
    )


def preprocess_spec(cfg: Mapping) -> PreprocessSpec:
    """open_clip's eval transform (Resize shortest side, CenterCrop, ToTensor, Normalize) as data."""
    size = cfg["size"]
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ModelSourceError(f"non-square image size {tuple(size)} is not supported")
        size = size[0]
    if cfg.get("resize_mode", "shortest") != "shortest":
        raise ModelSourceError(f"open_clip resize_mode {cfg['resize_mode']!r} is not supported; only 'shortest'")
    try:
        return PreprocessSpec(
            image_size=int(size),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            interpolation=cfg.get("interpolation", "bicubic"),
            crop="resize_then_crop",
            resize_size=int(size),
            convert="after",
        )
    except InputError as exc:
        raise ModelSourceError(f"open_clip preprocess config {dict(cfg)} is not supported: {exc}") from None
