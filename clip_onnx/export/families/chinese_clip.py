"""Chinese-CLIP adapter: OFA-Sys checkpoints through transformers' ChineseCLIPModel.

Layout (the hub repos ``OFA-Sys/chinese-clip-vit-*`` and local copies):
``config.json`` (``model_type: chinese_clip``), ``pytorch_model.bin`` or
``model.safetensors``, ``vocab.txt`` (BERT WordPiece) and optionally
``preprocessor_config.json`` / ``tokenizer_config.json``.

``--random-weights`` builds the architecture from cn_clip's bundled
``model_configs/*.json`` (vision + text halves, named in the registry) and
borrows cn_clip's ``vocab.txt``, so nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from importlib import resources
from pathlib import Path

import torch

from clip_onnx.errors import CheckpointError, ModelSourceError
from clip_onnx.export.families import _hub
from clip_onnx.export.families._hub import WEIGHT_FILES, read_json
from clip_onnx.export.families.base import ExportableModel, Tower
from clip_onnx.registry import ModelSpec
from clip_onnx.runtime.preprocess import CLIP_MEAN, CLIP_STD, PreprocessSpec
from clip_onnx.runtime.tokenizers import load_tokenizer
from clip_onnx.runtime.tokenizers.wordpiece import WordPieceTokenizer

log = logging.getLogger(__name__)

FAMILY = "chinese_clip"
DEFAULT_CONTEXT_LENGTH = 52  # cn_clip's tokenize() default, which the released models were trained with
_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# Prompts of every length the gate needs: single words, everyday captions, mixed
# scripts and digits, punctuation, one longer than the 52-token context, and empty.
SAMPLE_TEXTS = (
    "猫",
    "一只狗在草地上奔跑",
    "海边的日落照片。",
    "红色的汽车停在房子前面",
    "雪山和湖泊的风景",
    "一张包含3个人的照片",
    "皮卡丘",
    "The Great Wall 长城, 2024年",
    "杰尼龟、妙蛙种子和小火龙！",
    "夜晚的古老城堡坐落在山丘上，被月光和沿路的灯笼照亮，远处是一片安静的森林和缓缓流过的河流，天空中繁星点点。",
    "",
)


class TextualTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def claims(source: str) -> bool:
    """A registered name / hub id, or a local directory whose config.json says ``model_type: chinese_clip``."""
    if _hub.find_spec(source, FAMILY) is not None:
        return True
    return read_json(Path(source).expanduser() / "config.json").get("model_type") == FAMILY


def load(source: str, *, random_weights: bool = False) -> ExportableModel:
    spec = _hub.find_spec(source, FAMILY)
    if random_weights:
        if spec is None:
            raise ModelSourceError(
                f"--random-weights needs a registered Chinese-CLIP name, got {source!r}; "
                f"registered: {', '.join(s.name for s in _hub.family_specs(FAMILY))}"
            )
        torch.manual_seed(0)
        model = build_model(random_config(spec))
        return exportable(
            spec.name,
            f"{spec.name} (random weights)",
            model,
            cn_clip_file("vocab.txt"),
            PreprocessSpec.from_dict(spec.config["preprocess"]),
            {},
            int(spec.config["context_length"]),
        )
    directory = _resolve_directory(source, spec)
    from transformers import ChineseCLIPModel

    try:
        model = ChineseCLIPModel.from_pretrained(directory).eval()
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for a bad checkpoint
        raise CheckpointError(f"could not load the Chinese-CLIP checkpoint in {str(directory)!r}: {exc}") from exc
    # The checkpoint's own processor config wins; the registry's copy covers a directory without one.
    processor = read_json(directory / "preprocessor_config.json")
    if processor or spec is None:
        preprocess = preprocess_from_hf(processor)
    else:
        preprocess = PreprocessSpec.from_dict(spec.config["preprocess"])
    context = int(spec.config["context_length"]) if spec else DEFAULT_CONTEXT_LENGTH
    return exportable(
        spec.name if spec else directory.name,
        source,
        model,
        directory / "vocab.txt",
        preprocess,
        read_json(directory / "tokenizer_config.json"),
        context,
    )


def random_config(spec: ModelSpec):
    """A ChineseCLIPConfig with the dimensions of cn_clip's model_configs for ``spec``."""
    from transformers import ChineseCLIPConfig

    vision = json.loads(cn_clip_file(f"model_configs/{spec.config['vision']}.json").read_text(encoding="utf-8"))
    text = json.loads(cn_clip_file(f"model_configs/{spec.config['text']}.json").read_text(encoding="utf-8"))
    width = vision["vision_width"]
    return ChineseCLIPConfig(
        projection_dim=vision["embed_dim"],
        vision_config=dict(
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=vision["vision_layers"],
            num_attention_heads=width // vision.get("vision_head_width", 64),
            image_size=vision["image_resolution"],
            patch_size=vision["vision_patch_size"],
            projection_dim=vision["embed_dim"],
        ),
        text_config=dict(
            vocab_size=text["vocab_size"],
            hidden_size=text["text_hidden_size"],
            intermediate_size=text["text_intermediate_size"],
            num_hidden_layers=text["text_num_hidden_layers"],
            num_attention_heads=text["text_num_attention_heads"],
            hidden_act=text["text_hidden_act"],
            max_position_embeddings=text["text_max_position_embeddings"],
            type_vocab_size=text["text_type_vocab_size"],
        ),
    )


def build_model(config):
    from transformers import ChineseCLIPModel

    return ChineseCLIPModel(config).eval()


def preprocess_from_hf(config: dict) -> PreprocessSpec:
    """PreprocessSpec for a ChineseCLIPImageProcessor config (the class defaults where a key is absent)."""
    # Old configs store bare ints: transformers reads "size" as a shortest edge and "crop_size" as a square.
    size = config.get("size", {"shortest_edge": 224})
    size = {"shortest_edge": size} if isinstance(size, int) else size
    crop = config.get("crop_size", {"height": 224, "width": 224})
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    mean, std = config.get("image_mean", CLIP_MEAN), config.get("image_std", CLIP_STD)
    interpolation = _PIL_FILTERS.get(config.get("resample", 3))
    if interpolation is None:
        raise ModelSourceError(f"preprocessor_config.json: unknown resample {config.get('resample')!r}")
    if "height" in size:
        if size["height"] != size["width"]:
            raise ModelSourceError(f"preprocessor_config.json: non-square size {size} is not supported")
        if config.get("do_center_crop", True) and crop["height"] != size["height"]:
            raise ModelSourceError(f"preprocessor_config.json: size {size} with crop_size {crop} is not supported")
        return PreprocessSpec(size["height"], mean, std, interpolation=interpolation, crop="squash_then_crop")
    if not config.get("do_center_crop", True):
        raise ModelSourceError(
            "preprocessor_config.json: a shortest_edge resize without a centre crop gives "
            "non-square images, which the exported graph cannot take"
        )
    # transformers floors the centre-crop offset where torchvision rounds it: on images whose
    # resized long side exceeds the crop by an odd amount the two can differ by one pixel.
    log.warning(
        "Chinese-CLIP preprocessing with shortest_edge resize: the centre crop may sit one pixel "
        "away from transformers' on some image sizes"
    )
    return PreprocessSpec(
        crop["height"],
        mean,
        std,
        interpolation=interpolation,
        crop="resize_then_crop",
        resize_size=size["shortest_edge"],
    )


def exportable(
    name: str, source: str, model, vocab: Path, preprocess: PreprocessSpec, tokenizer_config: dict, context_length: int
) -> ExportableModel:
    spec = {
        "kind": WordPieceTokenizer.kind,
        "file": "vocab.txt",
        "context_length": context_length,
        "lowercase": bool(tokenizer_config.get("do_lower_case", True)),
        "strip_accents": tokenizer_config.get("strip_accents"),
        "tokenize_chinese_chars": bool(tokenizer_config.get("tokenize_chinese_chars", True)),
    }
    tokenizer = load_tokenizer({**spec, "file": vocab.name}, vocab.parent)
    config = model.config
    seq_axes = {0: "batch", 1: "sequence"}
    return ExportableModel(
        name=name,
        family=FAMILY,
        source=source,
        # transformers 5 returns a ModelOutput whose pooler_output holds the projected features.
        visual=Tower(
            "visual",
            _hub.VisualTower(model, "get_image_features", "pooler_output"),
            ("pixel_values",),
            "image_embeds",
            {"pixel_values": {0: "batch"}},
        ),
        # BERT attends through the mask, so prompts trimmed to the batch's longest one give the same embeddings.
        textual=Tower(
            "textual",
            TextualTower(model),
            ("input_ids", "attention_mask"),
            "text_embeds",
            {"input_ids": seq_axes, "attention_mask": seq_axes},
        ),
        logit_scale=float(model.logit_scale.detach().exp()),
        embed_dim=int(config.projection_dim),
        preprocess=preprocess,
        tokenizer=spec,
        tokenizer_files={"vocab.txt": vocab},
        sample_texts=SAMPLE_TEXTS,
        tokenize=tokenizer,
        config={
            "projection_dim": config.projection_dim,
            "vision": {k: getattr(config.vision_config, k) for k in _VISION_KEYS},
            "text": {k: getattr(config.text_config, k) for k in _TEXT_KEYS},
        },
        templates=family_templates(),
    )


_VISION_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
    "hidden_act",
)
_TEXT_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "hidden_act",
)


def family_templates() -> tuple[str, ...]:
    doc = json.loads(resources.files("clip_onnx.specs").joinpath("chinese_clip.json").read_text(encoding="utf-8"))
    return tuple(doc["templates"])


def cn_clip_file(relative: str) -> Path:
    """A data file shipped inside cn_clip's ``clip/`` package, found without importing cn_clip."""
    spec = importlib.util.find_spec("cn_clip")
    if spec is None or spec.origin is None:
        raise ModelSourceError(
            "--random-weights for Chinese-CLIP reads cn_clip's model configs and vocab.txt; "
            "install it with `pip install cn_clip --no-deps`"
        )
    path = Path(spec.origin).parent / "clip" / relative
    if not path.is_file():
        raise ModelSourceError(f"cn_clip is installed but lacks {path}")
    return path


def _resolve_directory(source: str, spec: ModelSpec | None) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        missing = [f for f in ("config.json", "vocab.txt") if not (path / f).is_file()]
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            missing.append(" or ".join(WEIGHT_FILES))
        if missing:
            raise ModelSourceError(f"local directory {source!r} is not a Chinese-CLIP checkpoint: missing {missing}")
        return path
    return _hub.fetch(
        f"Chinese-CLIP model {source!r}",
        spec.hub_id if spec else source,
        ["*.json", "*.txt", *WEIGHT_FILES],
        f"a local directory in the transformers layout (config.json, {' or '.join(WEIGHT_FILES)}, "
        f"vocab.txt, preprocessor_config.json)",
    )
