"""Synthetic "coloured shapes" data for the bundled RuCLIP demo model.

Torch-free on purpose (stdlib, numpy, Pillow and the runtime only): the
training script, the test suite, the parity gate and the CLI demo all use it.

Every image is one coloured geometric shape on a background (white, black,
gray, noisy or a soft gradient), with pixel noise, drawn with Pillow from a
``numpy.random.Generator`` (``pictures``). Captions are Russian, with
grammatical agreement in gender and case (``vocabulary``, ``captions``).

Compositional hold-out: :data:`HELD_OUT_COMBOS` lists (colour, shape) pairs
that :func:`sample_training_batch` never draws; :func:`heldout_set` renders test
images of exactly those pairs (or of the seen pairs) from its own seed.

Zero-shot labels and prompt templates (RuCLIP ``Predictor`` style, see
``clip_onnx.runtime.zero_shot``): :data:`SHAPE_LABELS` with
:data:`SHAPE_TEMPLATES`, :data:`COLOUR_LABELS` with :data:`COLOUR_TEMPLATES`,
and :func:`pair_label` phrases with :data:`PAIR_TEMPLATES`. Pictures are
preprocessed by the runtime's ``ImagePreprocessor`` with the model's spec.
"""

from __future__ import annotations

from clip_onnx.demo.captions import compatibility, describe
from clip_onnx.demo.datasets import caption_corpus, heldout_set, random_images, sample_training_batch
from clip_onnx.demo.pictures import Sample, render
from clip_onnx.demo.vocabulary import (
    ALL_COMBOS,
    BACKGROUNDS,
    COLOUR_LABELS,
    COLOUR_TEMPLATES,
    COLOURS,
    HELD_OUT_COMBOS,
    PAIR_TEMPLATES,
    SEEN_COMBOS,
    SHAPE_LABELS,
    SHAPE_TEMPLATES,
    SHAPES,
    SIZES,
    noun_phrase,
    pair_label,
    reference_rgb,
)

__all__ = [
    "COLOURS",
    "SHAPES",
    "BACKGROUNDS",
    "SIZES",
    "COLOUR_LABELS",
    "SHAPE_LABELS",
    "COLOUR_TEMPLATES",
    "SHAPE_TEMPLATES",
    "PAIR_TEMPLATES",
    "HELD_OUT_COMBOS",
    "SEEN_COMBOS",
    "ALL_COMBOS",
    "Sample",
    "render",
    "describe",
    "compatibility",
    "noun_phrase",
    "pair_label",
    "reference_rgb",
    "sample_training_batch",
    "heldout_set",
    "random_images",
    "caption_corpus",
]
