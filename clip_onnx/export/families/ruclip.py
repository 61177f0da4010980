"""RuCLIP adapter: ai-forever's checkpoints in their native layout.

Native layout (the hub repos ``ai-forever/ruclip-vit-*`` and local copies):
``config.json`` (constructor arguments plus optional mean/std),
``pytorch_model.bin`` (the CLIP state_dict) and ``bpe.model`` (youtokentome BPE).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from importlib import resources
from pathlib import Path

import torch

from clip_onnx import demo
from clip_onnx.errors import CheckpointError, ModelSourceError
from clip_onnx.export.checkpoint import check_config_types, load_into, load_state_dict, read_json_object
from clip_onnx.export.families import _hub
from clip_onnx.export.families.base import ExportableModel, Tower
from clip_onnx.export.families.ruclip_model import CLIP
from clip_onnx.registry import ModelSpec, find_model
from clip_onnx.runtime.preprocess import CLIP_MEAN, CLIP_STD, PreprocessSpec
from clip_onnx.runtime.tokenizers import load_tokenizer
from clip_onnx.runtime.tokenizers.yttm_bpe import YttmBpeTokenizer

log = logging.getLogger(__name__)

NATIVE_FILES = ("config.json", "pytorch_model.bin", "bpe.model")
_ARCH_KEYS = (
    "embed_dim",
    "image_resolution",
    "vision_layers",
    "vision_width",
    "vision_patch_size",
    "context_length",
    "vocab_size",
    "transformer_width",
    "transformer_heads",
    "transformer_layers",
)
# RuCLIPProcessor's fixed special ids.
_PAD, _BOS, _EOS = 0, 2, 3
# RuCLIP's Predictor prompts, plus everyday phrases, so parity sees realistic token sequences.
SAMPLE_TEXTS = (
    "кошка",
    "собака на траве",
    "фото, на котором изображено море",
    "красный автомобиль у дома",
    "изображение с горами и снегом",
    "Ёжик в тумане",
    "картинка с пиццей",
    "на фото видно 3 человека",
    "старинный замок на холме ночью, освещённый луной и фонарями вдоль дороги",
    "",
)


class TextualTower(torch.nn.Module):
    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids)


def is_native_dir(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in NATIVE_FILES)


def claims(source: str) -> bool:
    """Whether ``source`` names a RuCLIP model: a registered hub id or a directory with a RuCLIP config.json."""
    config = Path(source) / "config.json"
    if config.is_file():
        try:
            return all(k in json.loads(config.read_text(encoding="utf-8")) for k in _ARCH_KEYS)
        except ValueError:
            return False
    return _hub.find_spec(source, "ruclip") is not None


def load(source: str, *, random_weights: bool = False) -> ExportableModel:
    spec = _hub.find_spec(source, "ruclip")
    if random_weights:
        if spec is None:
            raise ModelSourceError(f"--random-weights needs a registered model name, got {source!r}")
        return _random(spec)
    directory = _resolve_directory(source, spec)
    config = read_json_object(directory / "config.json")
    check_config_types(config, directory / "config.json", _ARCH_KEYS, ("mean", "std"))
    try:
        model = build_model(config)
    except Exception as exc:  # torch's modules raise AssertionError, ValueError... on impossible sizes
        raise CheckpointError(
            f"{str(directory / 'config.json')!r} describes a RuCLIP that cannot be built: {type(exc).__name__}: {exc}"
        ) from None
    state = load_state_dict(directory / "pytorch_model.bin")
    load_into(model, state, directory / "pytorch_model.bin", "RuCLIP architecture")
    name = spec.name if spec else directory.name
    exportable = _exportable(name, source, model, config, directory / "bpe.model")
    if spec is not None and spec.asset is not None and directory == _asset_dir(spec):
        # The embedded model knows only the demo's coloured shapes: check it, and gate it, on those.
        # Shape labels: the gate's top-1 is an argmax over the sample texts, and a colour
        # label next to a shape label would pit two true answers against each other.
        exportable = dataclasses.replace(exportable, sample_texts=demo.SHAPE_LABELS, gate_images=demo.random_images)
    return exportable


def build_model(config) -> CLIP:
    missing = [k for k in _ARCH_KEYS if k not in config]
    if missing:
        raise ModelSourceError(f"RuCLIP config.json lacks {missing}")
    return CLIP(**{k: config[k] for k in _ARCH_KEYS}).eval()


def _random(spec: ModelSpec) -> ExportableModel:
    # The embedded demo checkpoint carries a real youtokentome model; random-weight
    # exports borrow it so tokenization is exercised without any download.
    config = dict(spec.config) or json.loads((_asset_dir(spec) / "config.json").read_text(encoding="utf-8"))
    torch.manual_seed(0)
    model = build_model(config)
    return _exportable(spec.name, f"{spec.name} (random weights)", model, config, _demo_tokenizer())


def _asset_dir(spec: ModelSpec) -> Path:
    return Path(str(resources.files("clip_onnx").joinpath(spec.asset)))


def _demo_tokenizer() -> Path:
    path = _asset_dir(find_model("ruclip-demo")) / "bpe.model"
    if not path.is_file():
        raise ModelSourceError(f"the embedded demo tokenizer {path} is missing; reinstall clip-onnx")
    return path


def _resolve_directory(source: str, spec: ModelSpec | None) -> Path:
    path = Path(source).expanduser()
    if is_native_dir(path):
        return path
    if path.is_dir():
        missing = [f for f in NATIVE_FILES if not (path / f).is_file()]
        raise ModelSourceError(f"local directory {source!r} is not a RuCLIP checkpoint: missing {missing}")
    if spec is not None and spec.asset is not None:
        return _asset_dir(spec)
    return _hub.fetch(
        f"RuCLIP model {source!r}",
        spec.hub_id if spec else source,
        NATIVE_FILES,
        f"a local directory containing {', '.join(NATIVE_FILES)}",
    )


def tokenizer_spec(context_length: int) -> dict:
    """The manifest's tokenizer spec: RuCLIPProcessor's lowercased youtokentome BPE with its fixed special ids."""
    return {
        "kind": YttmBpeTokenizer.kind,
        "file": "bpe.model",
        "context_length": int(context_length),
        "bos_id": _BOS,
        "eos_id": _EOS,
        "pad_id": _PAD,
        "lowercase": True,
    }


def preprocess_spec(config) -> PreprocessSpec:
    """RuCLIPProcessor's image transform for a checkpoint's config.json (OpenAI CLIP's mean/std unless it says)."""
    return PreprocessSpec(
        image_size=int(config["image_resolution"]),
        mean=tuple(config.get("mean") or CLIP_MEAN),
        std=tuple(config.get("std") or CLIP_STD),
        interpolation="bilinear",
        crop="crop_then_resize",
    )


def _exportable(name: str, source: str, model: CLIP, config, bpe_path: Path) -> ExportableModel:
    spec = tokenizer_spec(config["context_length"])
    return ExportableModel(
        name=name,
        family="ruclip",
        source=source,
        visual=Tower(
            "visual", _hub.VisualTower(model), ("pixel_values",), "image_embeds", {"pixel_values": {0: "batch"}}
        ),
        # Trailing padding can be cut: the mask is causal, so no token before the first EOS
        # (where encode_text pools) sees what follows it.
        textual=Tower(
            "textual", TextualTower(model), ("input_ids",), "text_embeds", {"input_ids": {0: "batch", 1: "seq"}}
        ),
        logit_scale=float(model.logit_scale.detach().exp()),
        embed_dim=int(config["embed_dim"]),
        preprocess=preprocess_spec(config),
        tokenizer=spec,
        tokenizer_files={spec["file"]: bpe_path},
        sample_texts=SAMPLE_TEXTS,
        tokenize=load_tokenizer({**spec, "file": bpe_path.name}, bpe_path.parent),
        config={
            **{k: config[k] for k in _ARCH_KEYS},
            "text_sequence": {"dynamic": True, "pooling": f"first eos id {_EOS}"},
        },
    )
