"""What the gates and the benchmark feed the graphs: one builder, from an exportable model or from a bundle alone.

Torch-free. ``FeedMaker`` holds what a model's feeds are made of (its
preprocessing, tokenizer, sample prompts and domain pictures, and whether a
text batch may be cut to its longest prompt, as ClipModel runs it); the
fp16/int8 gate, the engine gate, the bundle's self-test export and the
benchmark's accuracy table all build their inputs with it, and ``gate_task``
is the one rule for which top-1 agreement a gate counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clip_onnx.bundle import Bundle
from clip_onnx.parity import GATE_BATCH, GATE_IMAGES, GATE_TEMPLATES, Logits, ZeroShot, gate_prompts
from clip_onnx.preprocess_spec import PreprocessSpec
from clip_onnx.runtime.preprocess import ImagePreprocessor
from clip_onnx.runtime.tokenizers import load_tokenizer
from clip_onnx.runtime.tokenizers.base import cut_padding
from clip_onnx.synthetic import synthetic_images

Feed = Mapping[str, np.ndarray]
# Prompts for bundles exported before the manifest kept the model's own (``sample_texts``).
FALLBACK_TEXTS = (
    "a photo of a cat",
    "кошка на диване",
    "一只狗在草地上奔跑",
    "a red car parked in front of a house",
    "изображение с горами и снегом",
    "海边的日落照片",
    "pizza",
    "",
)


def gate_task(kind: str, groups: int = len(GATE_TEMPLATES)) -> ZeroShot | Logits:
    """The top-1 a gate checks: the argmax class for a classifier, zero-shot over ``groups`` prompt blocks for CLIP."""
    return Logits() if kind == "classifier" else ZeroShot(groups)


@dataclass(frozen=True)
class FeedMaker:
    """The makings of a model's feeds: ``tokenize`` None for a classifier, ``pad_id`` None where texts stay padded."""

    preprocess: PreprocessSpec
    tokenize: Callable[[list[str]], Mapping[str, np.ndarray]] | None
    sample_texts: Sequence[str]
    pictures: Callable[[int, int], list[Any]] = field(default=synthetic_images, repr=False)
    pad_id: int | None = None

    @classmethod
    def of_bundle(cls, bundle: Bundle) -> FeedMaker:
        """From ``bundle`` alone (no torch, no source): its preprocessing, tokenizer file and sample prompts."""
        manifest = bundle.manifest
        if manifest.tokenizer is None:
            return cls(manifest.preprocess, None, ())
        tokenize = load_tokenizer(manifest.tokenizer, bundle.path)
        trimmable = bundle.graph("textual").trimmable
        return cls(
            manifest.preprocess,
            tokenize,
            manifest.sample_texts or FALLBACK_TEXTS,
            pad_id=tokenize.pad_id if trimmable else None,
        )

    def images(self, count: int = GATE_IMAGES, seed: int = 1) -> list[Feed]:
        """``count`` pictures in GATE_BATCH batches, each batch seeded on from ``seed``."""
        preprocess = ImagePreprocessor(self.preprocess)
        return [
            {"pixel_values": preprocess(self.pictures(min(GATE_BATCH, count - start), seed + start))}
            for start in range(0, count, GATE_BATCH)
        ]

    def prompts(self) -> list[Feed]:
        """Every sample prompt in every GATE_TEMPLATES shape, in GATE_BATCH batches, cut as ClipModel cuts them."""
        return self.texts(gate_prompts(self.sample_texts))

    def texts(self, texts: Sequence[str]) -> list[Feed]:
        """``texts`` tokenized in GATE_BATCH batches, each cut to its longest prompt where the graph allows."""
        if self.tokenize is None:
            return []
        batches = [self.tokenize(list(texts[s : s + GATE_BATCH])) for s in range(0, len(texts), GATE_BATCH)]
        return [cut_padding(b, self.pad_id) if self.pad_id is not None else dict(b) for b in batches]

    def gate(self, images: int = GATE_IMAGES, seed: int = 1) -> dict[str, list[Feed]]:
        """The built-in gate's feeds per tower: ``images`` pictures and the gate prompts."""
        feeds = {"visual": self.images(images, seed)}
        if self.tokenize is not None:
            feeds["textual"] = self.prompts()
        return feeds

    def by_batch(self, batches: Sequence[int], seed: int = 7) -> tuple[dict[str, dict[int, Feed]], Feed | None]:
        """tower -> batch size -> feed (the benchmark's), and the padded ids of the largest text batch."""
        biggest = max(batches)
        pixels = ImagePreprocessor(self.preprocess)(synthetic_images(biggest, seed=seed))
        feeds = {"visual": {b: {"pixel_values": pixels[:b]} for b in batches}}
        if self.tokenize is None:
            return feeds, None
        texts = self.sample_texts or FALLBACK_TEXTS
        tokens = self.tokenize([texts[i % len(texts)] + f" {i}" for i in range(biggest)])
        feeds["textual"] = {b: {k: v[:b] for k, v in tokens.items()} for b in batches}
        return feeds, tokens
