"""Random Russian captions of demo pictures, with grammatical agreement in gender and case.

"красный круг", "большая синяя звезда на белом фоне", "фото жёлтого кольца",
"картинка с зелёным сердцем", "фигура фиолетового цвета", "это ромб", ...
Some name only the colour or only the shape, which is what zero-shot labels do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clip_onnx.demo.pictures import Sample
from clip_onnx.demo.vocabulary import background_phrase, colour_word, noun_phrase, shape_gender
from clip_onnx.errors import InputError

_PARTICIPLE = {"m": "нарисован", "f": "нарисована", "n": "нарисовано"}
_SIZE_WORD = {"small": "маленький", "large": "большой"}

# Templates naming colour and shape: f(colour, shape, size word or None, background phrase) -> caption.
_FULL_TEMPLATES = (
    lambda c, s, z, b: noun_phrase("nom", c, s, z),
    lambda c, s, z, b: "это " + noun_phrase("nom", c, s, z),
    lambda c, s, z, b: "на картинке " + noun_phrase("nom", c, s, z),
    lambda c, s, z, b: "фото " + noun_phrase("gen", c, s, z),
    lambda c, s, z, b: "изображение " + noun_phrase("gen", c, s, z),
    lambda c, s, z, b: "рисунок " + noun_phrase("gen", c, s, z),
    lambda c, s, z, b: "картинка с " + noun_phrase("ins", c, s, z),
    lambda c, s, z, b: "я вижу " + noun_phrase("acc", c, s, z),
    lambda c, s, z, b: noun_phrase("nom", c, s, z) + " на " + b + " фоне",
    lambda c, s, z, b: "на " + b + " фоне " + _PARTICIPLE[shape_gender(s)] + " " + noun_phrase("nom", c, s, z),
    lambda c, s, z, b: noun_phrase("nom", None, s, z) + " " + colour_word("gen", "m", c) + " цвета",
    lambda c, s, z, b: "фото: " + noun_phrase("nom", c, s, z) + " на " + b + " фоне",
)
# Templates naming only the shape.
_SHAPE_ONLY_TEMPLATES = (
    lambda s, z, b: noun_phrase("nom", None, s, z),
    lambda s, z, b: "это " + noun_phrase("nom", None, s, z),
    lambda s, z, b: "на картинке " + noun_phrase("nom", None, s, z),
    lambda s, z, b: "фото " + noun_phrase("gen", None, s, z),
    lambda s, z, b: "картинка с " + noun_phrase("ins", None, s, z),
    lambda s, z, b: noun_phrase("nom", None, s, z) + " на " + b + " фоне",
    lambda s, z, b: "геометрическая фигура: " + noun_phrase("nom", None, s, z),
)
# Templates naming only the colour.
_COLOUR_ONLY_TEMPLATES = (
    lambda c, b: colour_word("nom", "m", c),
    lambda c, b: colour_word("nom", "m", c) + " цвет",
    lambda c, b: colour_word("nom", "m", c) + " предмет",
    lambda c, b: colour_word("nom", "f", c) + " фигура",
    lambda c, b: "что-то " + colour_word("nom", "n", c),
    lambda c, b: "фигура " + colour_word("gen", "m", c) + " цвета",
    lambda c, b: "фото " + colour_word("gen", "f", c) + " фигуры",
    lambda c, b: colour_word("nom", "f", c) + " фигура на " + b + " фоне",
)


def describe(sample: Sample, rng: np.random.Generator, kind: str | None = None) -> tuple[str, tuple]:
    """A random Russian caption for ``sample`` and what it mentions.

    ``kind``: ``"full"`` (colour and shape), ``"shape"`` (shape only),
    ``"colour"`` (colour only) or None for a random one (50/30/20 %).
    The second value is ``(colour, shape, background, size)`` with None for
    whatever the caption does not say; :func:`compatibility` uses it.
    """
    bg = background_phrase(sample.background)
    size = _SIZE_WORD.get(sample.size) if rng.random() < 0.5 else None
    if kind is None:
        u = rng.random()
        kind = "full" if u < 0.5 else "shape" if u < 0.8 else "colour"
    if kind == "full":
        t = int(rng.integers(len(_FULL_TEMPLATES)))
        text = _FULL_TEMPLATES[t](sample.colour, sample.shape, size, bg)
        mentions = (sample.colour, sample.shape)
    elif kind == "shape":
        t = int(rng.integers(len(_SHAPE_ONLY_TEMPLATES)))
        text = _SHAPE_ONLY_TEMPLATES[t](sample.shape, size, bg)
        mentions = (None, sample.shape)
    elif kind == "colour":
        t = int(rng.integers(len(_COLOUR_ONLY_TEMPLATES)))
        text = _COLOUR_ONLY_TEMPLATES[t](sample.colour, bg)
        mentions = (sample.colour, None)
        size = None
    else:
        raise InputError(f"unknown caption kind {kind!r}")
    said_bg = sample.background if " фоне" in text else None
    said_size = sample.size if size is not None else None
    if rng.random() < 0.25:  # people often write "е" for "ё"
        text = text.replace("ё", "е")
    if rng.random() < 0.3:
        text = text[:1].upper() + text[1:]
    return text, (*mentions, said_bg, said_size)


def compatibility(mentions: Sequence[tuple], samples: Sequence[Sample]) -> np.ndarray:
    """bool [len(samples), len(mentions)]: whether caption j is true of image i."""
    attrs = np.array([(s.colour, s.shape, s.background, s.size) for s in samples], dtype=object)
    out = np.ones((len(samples), len(mentions)), bool)
    for j, m in enumerate(mentions):
        for k, value in enumerate(m):
            if value is not None:
                out[:, j] &= attrs[:, k] == value
    return out
