"""The demo's data sets: training batches, held-out test sets, gate pictures and the BPE corpus."""

from __future__ import annotations

import numpy as np
from PIL import Image

from clip_onnx.demo.captions import describe
from clip_onnx.demo.pictures import Sample, render
from clip_onnx.demo.vocabulary import (
    ALL_COMBOS,
    BACKGROUNDS,
    COLOUR_LABELS,
    COLOUR_TEMPLATES,
    HELD_OUT_COMBOS,
    SEEN_COMBOS,
    SHAPE_LABELS,
    SHAPE_TEMPLATES,
    SIZES,
)
from clip_onnx.runtime.zero_shot import prompts_for


def sample_training_batch(rng: np.random.Generator, n: int) -> tuple[list[Sample], list[str], list[tuple]]:
    """``n`` fresh images of seen (colour, shape) pairs, with captions and mentions."""
    samples, texts, mentions = [], [], []
    for _ in range(n):
        colour, shape = SEEN_COMBOS[rng.integers(len(SEEN_COMBOS))]
        sample = render(rng, colour, shape)
        text, said = describe(sample, rng)
        samples.append(sample)
        texts.append(text)
        mentions.append(said)
    return samples, texts, mentions


def heldout_set(n: int = 1000, seed: int = 20240607, combos: str = "unseen") -> list[Sample]:
    """``n`` test images, evenly over the held-out (``"unseen"``) or the ``"seen"`` pairs.

    Deterministic for a given ``seed``; use a seed the training never used.
    """
    pairs = {"unseen": HELD_OUT_COMBOS, "seen": SEEN_COMBOS}[combos]
    rng = np.random.default_rng(seed)
    return [render(rng, *pairs[i % len(pairs)]) for i in range(n)]


def random_images(count: int, seed: int) -> list[Image.Image]:
    """``count`` pictures of random (colour, shape) pairs, seen and unseen alike, e.g. to gate fp16/int8."""
    rng = np.random.default_rng(seed)
    return [render(rng, *ALL_COMBOS[rng.integers(len(ALL_COMBOS))]).image for _ in range(count)]


def caption_corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` captions of random seen and unseen pairs plus every zero-shot prompt, lowercased.

    Text only (no rendering), for training the BPE tokenizer; naming the
    held-out pairs here is harmless because no image of them is involved.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        colour, shape = ALL_COMBOS[rng.integers(len(ALL_COMBOS))]
        fake = Sample(None, colour, shape, BACKGROUNDS[rng.integers(len(BACKGROUNDS))], SIZES[rng.integers(len(SIZES))])
        out.append(describe(fake, rng)[0].lower())
    for labels, templates in ((SHAPE_LABELS, SHAPE_TEMPLATES), (COLOUR_LABELS, COLOUR_TEMPLATES)):
        for label in labels:  # label by label: the corpus the committed tokenizer was trained on
            out.extend(prompts_for([label], templates))
    return out
