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

import contextlib
import json
import pickle
import logging
import math
import os
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping

import numpy as np
import open_clip
import torch
from open_clip.hf_model import ClsLastHiddenStatePooler, ClsPooler, HFTextEncoder, MeanPooler
from open_clip.model import CLIP
from open_clip.tokenizer import default_bpe
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, SIMPLE_IMAGENET_TEMPLATES

from clip_onnx.errors import BundleError, CheckpointError, ExportError, InputError, ModelSourceError
from clip_onnx.export.families.base import ExportableModel, Tower
from clip_onnx.registry import find_model
from clip_onnx.runtime.preprocess import PreprocessSpec
from clip_onnx.runtime.tokenizers.clip_bpe import ClipBpeTokenizer
from clip_onnx.runtime.tokenizers.unigram import UnigramTokenizer

log = logging.getLogger(__name__)

SCHEMAS = ("hf-hub:", "local-dir:")
# open_clip's prompt set for zero-shot ImageNet, as "{}" templates for the manifest.
TEMPLATES = tuple(t("{}") for t in SIMPLE_IMAGENET_TEMPLATES)
# Poolings whose position does not move when trailing padding is cut (text_global_pool, HF poolers).
_CUT_SAFE_POOLS = ("argmax", "eos", "first")
_CUT_SAFE_HF_POOLERS = (MeanPooler, ClsPooler, ClsLastHiddenStatePooler)
SAMPLE_TEXTS = (
    "a photo of a cat", "a dog running on the beach at sunset", "itap of a goldfish.",
    "a bad photo of the Eiffel tower at night", "A RED CAR parked in front of an old house!",
    "a diagram with 3 people and 2 bicycles", "", "art of the small hummingbird",
    "an aerial view of a city in the rain, with tall buildings, bridges and a river " * 3, "pizza",
)
# Captions in many scripts: the XLM-R parity prompts and, with ImageNet class names, the demo tokenizer's corpus.
MULTILINGUAL_TEXTS = (
    "a photo of a cat sleeping on a sofa", "кошка спит на диване", "eine Katze schläft auf dem Sofa",
    "un chat qui dort sur le canapé", "un perro corriendo en la playa al atardecer", "沙发上睡觉的猫",
    "夕日の浜辺を走る犬", "소파에서 자는 고양이", "قطة نائمة على الأريكة", "सोफे पर सोती हुई बिल्ली",
    "kanepede uyuyan bir kedi", "kot śpiący na kanapie", "кіт спить на дивані", "una pizza con tomate y albahaca",
    "γάτα που κοιμάται στον καναπέ", "חתול ישן על הספה", "một con mèo đang ngủ trên ghế sofa", "แมวนอนหลับบนโซฟา",
    "ein roter Wagen vor einem alten Haus", "um cachorro correndo na praia", "", "собака бежит по пляжу " * 12,
)
# Texts that reach the tokenizer's corner cases: accents both ways, fullwidth forms, ZWJ emoji, jamo, spaces.
TOKENIZER_PROBES = (
    "cafe\u0301 café", "ＦＵＬＬ　ｗｉｄｔｈ　１２３", "👨\u200d👩\u200d👧 🇯🇵 👍🏽", "\u1100\u1161\u11a8 각",
    "  many   spaces\t\tand\nlines  ", "ﬁne ½ ①", "<s> literal </s> <mask>", "x" * 300,
)
DEMO_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # XLM-R's ids 0..3
# What the hub's XLM-R tokenizer_config.json says, so AutoTokenizer builds the same class for the demo file.
_DEMO_TOKENIZER_CONFIG = {"tokenizer_class": "XLMRobertaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                          "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
                          "mask_token": "<mask>", "model_max_length": 512}
DEMO_VOCAB_SIZE = 3000
_MAX_PIECE = 8


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
        raise ModelSourceError(f"{weights!r} is not a pretrained tag of open_clip model {model!r}; its tags are "
                               f"{tags}; or give a checkpoint file as {model}@/path/to/open_clip_pytorch_model.bin")
    return Source(model, tag=weights)


def claims(source: str) -> bool:
    try:
        return parse_source(source) is not None
    except ModelSourceError:
        return True  # ours, but malformed: load() raises the helpful message


def load(source: str, *, random_weights: bool = False, overrides: Mapping | None = None) -> ExportableModel:
    """Load ``source`` (see the module docstring); ``overrides`` merge into open_clip's config (tests shrink models)."""
    src = parse_source(source)
    if src is None:
        raise ModelSourceError(f"{source!r} names no open_clip model; use MODEL@TAG, MODEL@PATH, hf-hub:ORG/REPO "
                               f"or local-dir:DIR with a MODEL from open_clip.list_models()")
    model, info = create(src, random_weights=random_weights, overrides=overrides)
    spec = find_model(source)
    name = spec.name if spec else source
    return exportable(name, f"{name} (random weights)" if random_weights else source, model, info,
                      random_weights=random_weights)


def create(src: Source, *, random_weights: bool = False, overrides: Mapping | None = None,
           device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """``open_clip.create_model`` for ``src``; returns the eval-mode model and what the manifest records about it."""
    if not random_weights and not src.has_schema and src.tag is None and src.checkpoint is None:
        raise ModelSourceError(
            f"{src.model!r} names an architecture but no weights; use {src.model}@TAG with a tag from "
            f"{open_clip.list_pretrained_tags_by_model(src.model)}, {src.model}@/path/to/checkpoint, "
            f"or --random-weights")
    overrides = dict(overrides or {})
    hf_overrides = overrides.pop("hf_config", {})
    base = _model_config(src)
    kwargs = {k: ({**base[k], **v} if isinstance(v, Mapping) and isinstance(base.get(k), Mapping) else v)
              for k, v in overrides.items()}
    tag_cfg = open_clip.get_pretrained_cfg(src.model, src.tag) if src.tag else {}
    call = {"pretrained": None if random_weights else (src.tag or (str(src.checkpoint) if src.checkpoint else None)),
            # Without weights nothing may be downloaded, HF base weights included (the CLIP checkpoint holds them).
            "load_weights": not random_weights, "pretrained_text": False, "device": device}
    if tag_cfg.get("quick_gelu"):
        # open_clip only warns when a QuickGELU-trained tag (OpenAI's) meets a GELU config;
        # build the activation the weights were trained with.
        call["force_quick_gelu"] = True
    if random_weights and tag_cfg:
        # The preprocessing the tag's weights would bring, though the weights themselves are not loaded.
        call["force_preprocess_cfg"] = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                                        if k in tag_cfg}
    text_cfg = dict(kwargs.get("text_cfg", base["text_cfg"]))
    known = _hf_configs().get(text_cfg.get("hf_model_name"))
    if hf_overrides and not known:
        raise ModelSourceError(f"hf_config overrides need a text tower listed in open_clip.json's hf_configs, "
                               f"got {text_cfg.get('hf_model_name')!r}")
    hf_config = {**known, **hf_overrides} if known else None
    torch.manual_seed(0)
    try:
        with _offline_hf_config(hf_config) as config_dir:
            if config_dir is not None:
                kwargs["text_cfg"] = {**text_cfg, "hf_model_name": config_dir, "hf_model_pretrained": False}
            model = open_clip.create_model(src.model, **call, **kwargs)
    except (RuntimeError, OSError, ValueError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        raise (CheckpointError if src.checkpoint else ModelSourceError)(_load_failure(src, exc)) from None
    info = {"model": src.model, "tag": src.tag, "checkpoint": str(src.checkpoint) if src.checkpoint else None,
            "quick_gelu": bool(base.get("quick_gelu") or call.get("force_quick_gelu")),
            "open_clip": open_clip.__version__,
            "model_cfg": {**base, **kwargs, "text_cfg": text_cfg}, "hf_config": hf_config}
    return model.eval(), info


def _model_config(src: Source) -> dict:
    try:
        cfg = open_clip.get_model_config(src.model)
    except Exception as exc:  # hub and file errors of many types
        raise ModelSourceError(_load_failure(src, exc)) from None
    if not cfg:
        raise ModelSourceError(f"open_clip has no model config for {src.model!r}")
    return cfg


def _load_failure(src: Source, exc: Exception) -> str:
    spec = find_model(f"{src.model}@{src.tag}") if src.tag else None
    where = f" (weights on the hub at {spec.hub_id})" if spec and spec.hub_id else ""
    return (f"could not load open_clip model {src.model!r} with weights {src.tag or src.checkpoint}{where}: "
            f"{type(exc).__name__}: {exc}. Either make the Hugging Face hub reachable (or the files cached; "
            f"HF_HUB_OFFLINE=1 uses the cache only), or pass a local checkpoint as "
            f"{src.model}@/path/to/open_clip_pytorch_model.bin; "
            f"--random-weights exports the architecture without weights")


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


class VisualTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


class _CutView:
    """``model`` as encode_text sees it, with the positional embedding and causal mask cut to ``seq`` positions.

    Running open_clip's own encode_text on this view keeps its whole code path
    and changes only the two tensors sized for the full context.
    """

    def __init__(self, model: CLIP, seq):
        self._model = model
        self.positional_embedding = model.positional_embedding[:seq]
        self.attn_mask = model.attn_mask[:seq, :seq]

    def __getattr__(self, name):
        return getattr(self._model, name)


class ClipTextTower(torch.nn.Module):
    """open_clip ``CLIP.encode_text``; with ``cut``, on ids of any length up to the context."""

    def __init__(self, model: CLIP, cut: bool):
        super().__init__()
        self.model = model
        self.cut = cut

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.cut:
            return type(self.model).encode_text(_CutView(self.model, input_ids.shape[1]), input_ids)
        return self.model.encode_text(input_ids)


class HfTextTower(torch.nn.Module):
    """open_clip's HFTextEncoder path (``encode_text``) with the caller's attention mask.

    HFTextEncoder derives its mask as ``input_ids != pad_token_id``. Setting the
    ids the caller masked to the pad id hands the caller's mask to that same code
    path: for tokenizer output (mask 0 exactly at the padding) the ids do not
    change, and a literal "<pad>" in a text stays masked, as open_clip masks it.
    """

    def __init__(self, model, pad_id: int):
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids.masked_fill(attention_mask == 0, self.pad_id))


def text_tower(model) -> tuple[Tower, dict]:
    """The textual Tower and its manifest record: pooling rule and whether the sequence axis is symbolic."""
    if isinstance(model, CLIP):
        pool = model.text_pool_type
        rule = f"eos id {model.text_eos_id}" if pool == "eos" else pool
        reason = None
        if model.attn_mask is None:
            reason = "no causal mask: every position attends to the padding, so cutting it changes the result"
        elif pool not in _CUT_SAFE_POOLS:
            reason = f"pooling {pool!r} reads a position that moves when trailing padding is cut"
        module, names = ClipTextTower(model, cut=reason is None), ("input_ids",)
    elif isinstance(getattr(model, "text", None), HFTextEncoder):
        pooler = model.text.pooler
        rule = f"{type(pooler).__name__} over attention_mask"
        cut_safe = type(pooler) in _CUT_SAFE_HF_POOLERS
        reason = None if cut_safe else f"{type(pooler).__name__} reads the padding positions"
        module, names = HfTextTower(model, int(model.text.config.pad_token_id)), ("input_ids", "attention_mask")
    else:
        raise ModelSourceError(f"open_clip text tower {type(getattr(model, 'text', model)).__name__} is not supported; "
                               f"this adapter exports CLIP text transformers and HF text towers")
    axes = {0: "batch", 1: "seq"} if reason is None else {0: "batch"}
    sequence = {"dynamic": reason is None, "pooling": rule, **({"reason": reason} if reason else {})}
    return Tower("textual", module, names, "text_embeds", {n: axes for n in names}), sequence


def exportable(name: str, source: str, model, info: dict, *, random_weights: bool) -> ExportableModel:
    tower, sequence = text_tower(model)
    text_cfg = info["model_cfg"]["text_cfg"]
    tok_spec, files, tokenizer, keep = _tokenizer(model, text_cfg, info, random_weights)
    samples = MULTILINGUAL_TEXTS if tok_spec["kind"] == UnigramTokenizer.kind else SAMPLE_TEXTS
    # Four prompts, the longest among them, keep this check cheap on full-size towers.
    probe = [*samples[:3], max(samples, key=len)]
    _check_text_tower(model, tower, tokenizer(probe), sequence["dynamic"], int(tok_spec["pad_id"]))
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
        return PreprocessSpec(image_size=int(size), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                              interpolation=cfg.get("interpolation", "bicubic"), crop="resize_then_crop",
                              resize_size=int(size), convert="after")
    except InputError as exc:
        raise ModelSourceError(f"open_clip preprocess config {dict(cfg)} is not supported: {exc}") from None


def _tokenizer(model, text_cfg: Mapping, info: dict, random_weights: bool):
    """(manifest spec, bundle files, texts -> feed dict, object to keep alive), as open_clip.get_tokenizer picks."""
    context = int(text_cfg.get("context_length", 77))
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    clean = kwargs.pop("clean", None)
    if kwargs or text_cfg.get("tokenizer_mode"):
        raise ModelSourceError(f"tokenizer options {kwargs or text_cfg.get('tokenizer_mode')} of {info['model']!r} "
                               f"are not supported by the runtime tokenizers")
    if not isinstance(model, CLIP):
        return _unigram(model, text_cfg, info, context, clean or "whitespace", random_weights)
    if text_cfg.get("hf_tokenizer_name") or "siglip" in info["model"].lower():
        raise ModelSourceError(f"{info['model']!r} uses a tokenizer other than CLIP's BPE; it is not supported")
    vocab = Path(default_bpe())
    spec = {"kind": ClipBpeTokenizer.kind, "file": vocab.name, "context_length": context,
            "clean": clean or "lower", "lowercase": False, "pad_id": 0}
    tokenizer = ClipBpeTokenizer.from_spec(spec, vocab.parent)
    return spec, {vocab.name: vocab}, lambda texts: {"input_ids": tokenizer(texts)}, None


def _unigram(model, text_cfg, info, context, clean, random_weights):
    """The tokenizer open_clip runs for an HF text tower (``HFTokenizer``), saved into the bundle and checked.

    The bundle carries the file the reference tokenizer saves, not the one it
    read: transformers 5 rebuilds XLM-R's pipeline in its class (the file's
    charsmap, then WhitespaceSplit + Metaspace) and holds the scores as Python
    parsed them, so the saved file, read with exact scores, is what it runs.
    """
    from open_clip.tokenizer import HFTokenizer

    keep = tempfile.TemporaryDirectory(prefix="clip-onnx-tok-")
    work = Path(keep.name)
    if random_weights:
        config = model.text.config
        if config.model_type not in ("xlm-roberta", "roberta"):
            raise ModelSourceError(f"--random-weights has no demo tokenizer for HF model type {config.model_type!r}")
        name = work / "source"
        name.mkdir()
        (name / "tokenizer.json").write_text(demo_unigram_json(), encoding="utf-8")
        (name / "tokenizer_config.json").write_text(json.dumps(_DEMO_TOKENIZER_CONFIG), encoding="utf-8")
        name = str(name)
    elif info["model"].startswith("local-dir:"):
        name = info["model"][len("local-dir:"):]
    else:
        name = text_cfg["hf_tokenizer_name"]
    try:
        reference = HFTokenizer(name, context_length=context, clean=clean)
    except Exception as exc:  # transformers and huggingface_hub raise many unrelated types
        raise ModelSourceError(f"could not load the tokenizer {name!r} ({type(exc).__name__}: {exc}); make the "
                               f"hub reachable or cached, or use --random-weights") from None
    reference.save_pretrained(str(work / "saved"))
    spec = {"kind": UnigramTokenizer.kind, "file": "tokenizer.json", "context_length": context,
            "pad_id": int(model.text.config.pad_token_id), "clean": clean, "scores": "exact"}
    try:
        tokenizer = UnigramTokenizer.from_spec(spec, work / "saved")
    except BundleError as exc:
        raise ModelSourceError(f"the runtime Unigram tokenizer cannot use the tokenizer of {name!r}: {exc}") from None
    rows = model.text.config.vocab_size
    if len(reference.tokenizer) > rows:
        raise ModelSourceError(f"the tokenizer of {name!r} has {len(reference.tokenizer)} ids but the text tower's "
                               f"embedding only {rows} rows")
    _check_tokenizer(reference, tokenizer, (*MULTILINGUAL_TEXTS, *SAMPLE_TEXTS, *TOKENIZER_PROBES), name)
    return spec, {"tokenizer.json": work / "saved" / "tokenizer.json"}, tokenizer, keep


def _check_tokenizer(reference, tokenizer, texts, name: str) -> None:
    """The runtime tokenizer must give open_clip's ids; an export never ships one that does not."""
    expected = reference(list(texts)).numpy()
    got = tokenizer(list(texts))["input_ids"]
    bad = [i for i in range(len(texts)) if not np.array_equal(expected[i], got[i])]
    if bad:
        raise ExportError(f"the runtime tokenizer differs from open_clip's tokenizer of {name!r} on {len(bad)} of "
                          f"{len(texts)} probe texts, first {texts[bad[0]]!r:.80}: {got[bad[0]].tolist()[:12]} "
                          f"against {expected[bad[0]].tolist()[:12]}")
    log.info("runtime tokenizer gives open_clip's ids on %d probe texts", len(texts))


def demo_unigram_json(size: int = DEMO_VOCAB_SIZE) -> str:
    """An XLM-R-shaped Unigram tokenizer.json (ids <s> 0, <pad> 1, </s> 2, <unk> 3) made from built-in text.

    Pieces and scores are the substring frequencies Unigram training starts
    from, without its EM passes: the ``tokenizers`` trainer breaks score ties in
    hash order, so its output differs from run to run, and bundles should not.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    counts: Counter = Counter()
    for line in (*MULTILINGUAL_TEXTS, *IMAGENET_CLASSNAMES):
        for word in unicodedata.normalize("NFKC", line).split():
            word = "\u2581" + word
            for i in range(len(word)):
                for j in range(i + 1, min(len(word), i + _MAX_PIECE) + 1):
                    counts[word[i:j]] += 1
    chars = sorted(p for p in counts if len(p) == 1)
    longer = sorted((p for p, c in counts.items() if len(p) > 1 and c > 1), key=lambda p: (-counts[p], p))
    pieces = chars + longer[:max(0, size - len(DEMO_SPECIALS) - 1 - len(chars))]
    total = sum(counts[p] for p in pieces)
    # XLM-R's last id is <mask>, inside the embedding table.
    vocab = ([(s, 0.0) for s in DEMO_SPECIALS] + [(p, math.log(counts[p] / total)) for p in pieces]
             + [("<mask>", 0.0)])
    tok = Tokenizer(models.Unigram(vocab, unk_id=DEMO_SPECIALS.index("<unk>"), byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens([*DEMO_SPECIALS, "<mask>"])
    return tok.to_str()


def _check_text_tower(model, tower: Tower, tokens: Mapping[str, np.ndarray], cut: bool, pad_id: int) -> None:
    """The exported wrapper must be open_clip's encode_text: on padded ids and, if cut, on ids cut to the longest.

    The parity gate compares the graph with the wrapper, so a wrapper that
    drifted from open_clip would pass it; this compares the wrapper with open_clip.
    """
    feed = [torch.from_numpy(tokens[n]) for n in tower.input_names]
    used = tokens["attention_mask"] if "attention_mask" in tokens else tokens["input_ids"] != pad_id
    length = int(used.any(axis=0).nonzero()[0].max()) + 1
    with torch.no_grad():
        expected = model.encode_text(torch.from_numpy(tokens["input_ids"]))
        runs = {"padded": tower.module(*feed)}
        if cut:
            runs[f"cut to {length}"] = tower.module(*(t[:, :length] for t in feed))
    scale = max(1.0, float(expected.abs().max()))
    for what, got in runs.items():
        err = float((got - expected).abs().max())
        log.info("text tower vs open_clip encode_text, %s ids: max abs %.3g", what, err)
        if not err <= 1e-5 * scale:
            raise ExportError(f"the {tower.name} wrapper differs from open_clip's encode_text on {what} ids "
                              f"by {err:.3g} (outputs up to {scale:.3g})")
