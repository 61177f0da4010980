"""Synthetic "coloured shapes" data for the bundled RuCLIP demo model.

Torch-free on purpose (stdlib, numpy and Pillow only): the training script, the
test suite and the CLI demo all import it.

Every image is one coloured geometric shape on a background (white, black,
gray, noisy or a soft gradient), with pixel noise, drawn with Pillow from a
``numpy.random.Generator``.  Images are generated non-square; the shape always
lies inside the central square, which is what RuCLIP's preprocessing keeps
(centre crop of the largest square, then a bilinear resize).

Captions are Russian, with grammatical agreement in gender and case:
"красный круг", "большая синяя звезда на белом фоне", "фото жёлтого кольца",
"картинка с зелёным сердцем", "фигура фиолетового цвета", "это ромб", ...
Some name only the colour or only the shape, which is what zero-shot labels do.

Compositional hold-out: :data:`HELD_OUT_COMBOS` lists (colour, shape) pairs
that :func:`sample_training_batch` never draws; :func:`heldout_set` renders test
images of exactly those pairs (or of the seen pairs) from its own seed.

Zero-shot labels and prompt templates (RuCLIP ``Predictor`` style: every label
is put into every template, the normalised text embeddings are averaged):
:data:`SHAPE_LABELS` with :data:`SHAPE_TEMPLATES` and :data:`COLOUR_LABELS`
with :data:`COLOUR_TEMPLATES`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS", "SHAPES", "BACKGROUNDS", "SIZES", "COLOUR_LABELS", "SHAPE_LABELS",
    "COLOUR_TEMPLATES", "SHAPE_TEMPLATES", "PAIR_TEMPLATES", "pair_label", "HELD_OUT_COMBOS", "SEEN_COMBOS", "ALL_COMBOS",
    "RUCLIP_MEAN", "RUCLIP_STD", "Sample", "render", "describe", "sample_training_batch",
    "heldout_set", "random_images", "caption_corpus", "zero_shot_prompts", "compatibility",
    "crop_resize", "normalize", "preprocess", "reference_rgb",
]

# ---------------------------------------------------------------------------
# Vocabulary: colours, shapes, backgrounds, sizes with their inflected forms.
# ---------------------------------------------------------------------------

# Adjective endings by declension type: case -> (masculine, feminine, neuter).
# Inanimate nouns only, so the masculine accusative equals the nominative.
_HARD = {"nom": ("ый", "ая", "ое"), "gen": ("ого", "ой", "ого"), "acc": ("ый", "ую", "ое"),
         "ins": ("ым", "ой", "ым"), "prep": ("ом", "ой", "ом")}
_STRESSED = dict(_HARD, nom=("ой", "ая", "ое"), acc=("ой", "ую", "ое"))   # голубой
_SOFT = {"nom": ("ий", "яя", "ее"), "gen": ("его", "ей", "его"), "acc": ("ий", "юю", "ее"),
         "ins": ("им", "ей", "им"), "prep": ("ем", "ей", "ем")}           # синий
_GENDER_INDEX = {"m": 0, "f": 1, "n": 2}


def _adjective(stem: str, endings: dict) -> dict:
    return {(case, g): stem + endings[case][i] for case in endings for g, i in _GENDER_INDEX.items()}


# name (nominative masculine, the zero-shot label) -> (reference RGB, declension)
_COLOUR_TABLE = {
    "красный": ((215, 35, 35), _adjective("красн", _HARD)),
    "оранжевый": ((250, 135, 20), _adjective("оранжев", _HARD)),
    "жёлтый": ((245, 215, 30), _adjective("жёлт", _HARD)),
    "зелёный": ((40, 160, 60), _adjective("зелён", _HARD)),
    "голубой": ((85, 195, 240), _adjective("голуб", _STRESSED)),
    "синий": ((30, 55, 200), _adjective("син", _SOFT)),
    "фиолетовый": ((135, 55, 185), _adjective("фиолетов", _HARD)),
    "розовый": ((245, 120, 185), _adjective("розов", _HARD)),
}

# name (nominative, the zero-shot label) -> (gender, {case: form})
_SHAPE_TABLE = {
    "круг": ("m", dict(nom="круг", gen="круга", acc="круг", ins="кругом", prep="круге")),
    "квадрат": ("m", dict(nom="квадрат", gen="квадрата", acc="квадрат", ins="квадратом", prep="квадрате")),
    "треугольник": ("m", dict(nom="треугольник", gen="треугольника", acc="треугольник",
                              ins="треугольником", prep="треугольнике")),
    "звезда": ("f", dict(nom="звезда", gen="звезды", acc="звезду", ins="звездой", prep="звезде")),
    "кольцо": ("n", dict(nom="кольцо", gen="кольца", acc="кольцо", ins="кольцом", prep="кольце")),
    "крест": ("m", dict(nom="крест", gen="креста", acc="крест", ins="крестом", prep="кресте")),
    "ромб": ("m", dict(nom="ромб", gen="ромба", acc="ромб", ins="ромбом", prep="ромбе")),
    "сердце": ("n", dict(nom="сердце", gen="сердца", acc="сердце", ins="сердцем", prep="сердце")),
}

# Size words, used in captions only for clearly small or large shapes.
_SIZE_TABLE = {
    "маленький": {("nom", "m"): "маленький", ("nom", "f"): "маленькая", ("nom", "n"): "маленькое",
                  ("gen", "m"): "маленького", ("gen", "f"): "маленькой", ("gen", "n"): "маленького",
                  ("acc", "m"): "маленький", ("acc", "f"): "маленькую", ("acc", "n"): "маленькое",
                  ("ins", "m"): "маленьким", ("ins", "f"): "маленькой", ("ins", "n"): "маленьким"},
    "большой": {("nom", "m"): "большой", ("nom", "f"): "большая", ("nom", "n"): "большое",
                ("gen", "m"): "большого", ("gen", "f"): "большой", ("gen", "n"): "большого",
                ("acc", "m"): "большой", ("acc", "f"): "большую", ("acc", "n"): "большое",
                ("ins", "m"): "большим", ("ins", "f"): "большой", ("ins", "n"): "большим"},
}

# Background kind -> prepositional adjective for "на ... фоне".
_BACKGROUND_TABLE = {
    "white": "белом", "black": "чёрном", "gray": "сером", "noise": "зашумлённом", "gradient": "градиентном",
}

COLOURS: tuple[str, ...] = tuple(_COLOUR_TABLE)
SHAPES: tuple[str, ...] = tuple(_SHAPE_TABLE)
BACKGROUNDS: tuple[str, ...] = tuple(_BACKGROUND_TABLE)
SIZES: tuple[str, ...] = ("small", "medium", "large")

#: Zero-shot labels: nominative forms, masculine for colours.
COLOUR_LABELS: tuple[str, ...] = COLOURS
SHAPE_LABELS: tuple[str, ...] = SHAPES
#: Prompt templates for the zero-shot tasks; "{}" takes a label as is.
SHAPE_TEMPLATES: tuple[str, ...] = ("{}", "это {}", "на картинке {}")
COLOUR_TEMPLATES: tuple[str, ...] = ("{}", "{} цвет", "{} предмет")

#: Templates for joint colour+shape labels made by :func:`pair_label` ("красная звезда").
PAIR_TEMPLATES: tuple[str, ...] = ("{}", "это {}", "на картинке {}")

ALL_COMBOS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
#: Never drawn for training: each colour and each shape appears exactly once.
HELD_OUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("красный", "звезда"), ("оранжевый", "квадрат"), ("жёлтый", "кольцо"), ("зелёный", "треугольник"),
    ("голубой", "сердце"), ("синий", "круг"), ("фиолетовый", "ромб"), ("розовый", "крест"),
)
SEEN_COMBOS: tuple[tuple[str, str], ...] = tuple(c for c in ALL_COMBOS if c not in set(HELD_OUT_COMBOS))

RUCLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
RUCLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

_MIN_SIDE, _MAX_SIDE = 128, 176          # generated image sides (pixels)
# Shape radius / side of the kept square.  At 64 px and 8 px patches a smaller
# star or cross is hardly more than a blob; the demo model is meant to tell them apart.
_MIN_RADIUS, _MAX_RADIUS = 0.26, 0.42
_MAX_OFFSET = 0.2                        # shape centre's largest offset from the square's centre / side
_SMALL, _LARGE = 0.31, 0.37              # radius thresholds for the size words (about thirds)


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    colour: str
    shape: str
    background: str
    size: str          # "small", "medium" or "large"


def reference_rgb(colour: str) -> tuple[int, int, int]:
    """The RGB a named colour is drawn around (each image jitters it)."""
    return _COLOUR_TABLE[colour][0]


def _unit_polygon(shape: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Outline(s) of ``shape`` in unit coordinates (radius ~1, y down).

    Returns a list of polygons; a second polygon is a hole (the ring).
    """
    if shape in ("круг", "кольцо"):
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        outer = np.stack([np.cos(t), np.sin(t)], 1)
        if shape == "круг":
            return [outer]
        return [outer, outer * rng.uniform(0.45, 0.62)]
    if shape == "квадрат":
        s = 0.82
        return [np.array([[-s, -s], [s, -s], [s, s], [-s, s]])]
    if shape == "треугольник":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return [np.stack([np.cos(t), np.sin(t) + 0.2], 1)]
    if shape == "звезда":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.48))
        return [np.stack([r * np.cos(t), r * np.sin(t) + 0.05], 1)]
    if shape == "крест":
        a = rng.uniform(0.26, 0.34)
        return [np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                          [-a, a], [-1, a], [-1, -a], [-a, -a]])]
    if shape == "ромб":
        w = rng.uniform(0.55, 0.72)
        return [np.array([[0, -1], [w, 0], [0, 1], [-w, 0]])]
    if shape == "сердце":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [np.stack([x, y + 2.5], 1) / 16.5]
    raise ValueError(f"unknown shape {shape!r}")


_NOISE_BANK: np.ndarray | None = None


def _noise(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """float32 [H, W, C] standard-normal noise: a random window of a fixed bank (fast)."""
    global _NOISE_BANK
    if _NOISE_BANK is None:
        _NOISE_BANK = np.random.default_rng(7).standard_normal((2 * _MAX_SIDE, 2 * _MAX_SIDE, 3), np.float32)
    oy, ox, c = (int(v) for v in rng.integers(0, [_NOISE_BANK.shape[0] - height + 1,
                                                 _NOISE_BANK.shape[1] - width + 1, 3]))
    window = _NOISE_BANK[oy:oy + height, ox:ox + width]
    return window[..., c:c + 1] if channels == 1 else np.roll(window, c, axis=2)


def _background(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [H, W, 3] (or broadcastable) background in 0..255."""
    if kind == "white":
        return np.full((1, 1, 3), rng.uniform(228, 255), np.float32)
    if kind == "black":
        return np.full((1, 1, 3), rng.uniform(0, 30), np.float32)
    if kind == "gray":
        return np.full((1, 1, 3), rng.uniform(95, 165), np.float32)
    if kind == "noise":
        base = np.float32(rng.uniform(60, 200))
        return np.clip(base + 45 * _noise(rng, height, width, 1) + 12 * _noise(rng, height, width, 3), 0, 255)
    if kind == "gradient":
        # Between two low-saturation tones, in a random direction.
        ends = [np.float32(rng.uniform(20, 235)) + rng.uniform(-18, 18, 3).astype(np.float32) for _ in range(2)]
        angle = rng.uniform(0, 2 * np.pi)
        proj = (np.arange(width, dtype=np.float32)[None, :] * np.float32(math.cos(angle))
                + np.arange(height, dtype=np.float32)[:, None] * np.float32(math.sin(angle)))
        t = ((proj - proj.min()) / max(float(np.ptp(proj)), 1.0))[..., None]
        return ends[0] + (ends[1] - ends[0]) * t
    raise ValueError(f"unknown background {kind!r}")


def render(rng: np.random.Generator, colour: str | None, shape: str, background: str | None = None,
           rgb: Sequence[float] | None = None) -> Sample:
    """Draw one image of a ``colour`` ``shape``; everything else is random.

    ``rgb`` overrides the named colour's reference RGB (``colour`` may then be
    None: a shape of no named colour).
    """
    width = height = int(rng.integers(_MIN_SIDE, _MAX_SIDE - 47))
    if rng.random() < 0.7:
        # Non-square, by at least 8 px: for nearly square sizes RuCLIP's
        # RandomResizedCrop finds a full-area square and offsets it at random.
        extra = int(rng.integers(8, 49))
        if rng.random() < 0.5:
            width += extra
        else:
            height += extra
    if background is None:
        background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    canvas = _background(background, width, height, rng)

    side = min(width, height)                      # the square RuCLIP's crop keeps
    x0, y0 = (width - side) // 2, (height - side) // 2
    rel = float(rng.uniform(_MIN_RADIUS, _MAX_RADIUS))   # radius as a fraction of the square's side
    radius = rel * side
    # Anywhere inside the square, but at most _MAX_OFFSET * side off its centre.
    reach = min(side / 2 - radius * 1.05 - 2, _MAX_OFFSET * side)
    cx = x0 + side / 2 + rng.uniform(-reach, reach)
    cy = y0 + side / 2 + rng.uniform(-reach, reach)
    max_rot = {"круг": 180, "кольцо": 180, "квадрат": 15, "ромб": 12, "треугольник": 15,
               "звезда": 15, "крест": 15, "сердце": 15}[shape]
    angle = math.radians(rng.uniform(-max_rot, max_rot))
    stretch = rng.uniform(0.9, 1.1)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    mask_img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask_img)
    for k, poly in enumerate(_unit_polygon(shape, rng)):
        pts = (poly * [stretch, 1 / stretch]) @ rot.T * radius + [cx, cy]
        draw.polygon([tuple(p) for p in pts], fill=255 if k == 0 else 0)
    mask = np.asarray(mask_img, np.float32)[..., None] * np.float32(1 / 255)

    rgb = np.array(_COLOUR_TABLE[colour][0] if rgb is None else rgb, np.float32)
    rgb = rgb * np.float32(rng.uniform(0.85, 1.08)) + rng.uniform(-14, 14, 3).astype(np.float32)
    # Mild shading across the shape so it is not perfectly flat.
    gx, gy = (np.float32(v / radius) for v in rng.uniform(-0.08, 0.08, 2))
    shade = (1.0 + gx * (np.arange(width, dtype=np.float32)[None, :] - np.float32(cx))
             + gy * (np.arange(height, dtype=np.float32)[:, None] - np.float32(cy)))
    fg = rgb * np.clip(shade, 0.8, 1.2)[..., None]
    img = canvas + (fg - canvas) * mask
    img += np.float32(rng.uniform(0, 10)) * _noise(rng, height, width, 3)
    image = Image.fromarray((np.clip(img, 0, 255) + 0.5).astype(np.uint8), "RGB")

    size = "small" if rel < _SMALL else "large" if rel > _LARGE else "medium"
    return Sample(image, colour, shape, background, size)


# ---------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------

def _np(case: str, colour: str | None, shape: str, size: str | None) -> str:
    """Noun phrase "[size] [colour] shape" in ``case``, with agreement."""
    gender, forms = _SHAPE_TABLE[shape]
    words = []
    if size is not None:
        words.append(_SIZE_TABLE[size][case, gender])
    if colour is not None:
        words.append(_COLOUR_TABLE[colour][1][case, gender])
    words.append(forms[case])
    return " ".join(words)


def pair_label(colour: str, shape: str) -> str:
    """Nominative "colour shape" with agreement: ("красный", "звезда") -> "красная звезда"."""
    return _np("nom", colour, shape, None)


def _colour(case: str, gender: str, colour: str) -> str:
    return _COLOUR_TABLE[colour][1][case, gender]


_PARTICIPLE = {"m": "нарисован", "f": "нарисована", "n": "нарисовано"}
_SIZE_WORD = {"small": "маленький", "large": "большой"}

# Templates naming colour and shape: f(colour, shape, size word or None, background phrase) -> caption.
_FULL_TEMPLATES = (
    lambda c, s, z, b: _np("nom", c, s, z),
    lambda c, s, z, b: "это " + _np("nom", c, s, z),
    lambda c, s, z, b: "на картинке " + _np("nom", c, s, z),
    lambda c, s, z, b: "фото " + _np("gen", c, s, z),
    lambda c, s, z, b: "изображение " + _np("gen", c, s, z),
    lambda c, s, z, b: "рисунок " + _np("gen", c, s, z),
    lambda c, s, z, b: "картинка с " + _np("ins", c, s, z),
    lambda c, s, z, b: "я вижу " + _np("acc", c, s, z),
    lambda c, s, z, b: _np("nom", c, s, z) + " на " + b + " фоне",
    lambda c, s, z, b: "на " + b + " фоне " + _PARTICIPLE[_SHAPE_TABLE[s][0]] + " " + _np("nom", c, s, z),
    lambda c, s, z, b: _np("nom", None, s, z) + " " + _colour("gen", "m", c) + " цвета",
    lambda c, s, z, b: "фото: " + _np("nom", c, s, z) + " на " + b + " фоне",
)
# Templates naming only the shape.
_SHAPE_ONLY_TEMPLATES = (
    lambda s, z, b: _np("nom", None, s, z),
    lambda s, z, b: "это " + _np("nom", None, s, z),
    lambda s, z, b: "на картинке " + _np("nom", None, s, z),
    lambda s, z, b: "фото " + _np("gen", None, s, z),
    lambda s, z, b: "картинка с " + _np("ins", None, s, z),
    lambda s, z, b: _np("nom", None, s, z) + " на " + b + " фоне",
    lambda s, z, b: "геометрическая фигура: " + _np("nom", None, s, z),
)
# Templates naming only the colour.
_COLOUR_ONLY_TEMPLATES = (
    lambda c, b: _colour("nom", "m", c),
    lambda c, b: _colour("nom", "m", c) + " цвет",
    lambda c, b: _colour("nom", "m", c) + " предмет",
    lambda c, b: _colour("nom", "f", c) + " фигура",
    lambda c, b: "что-то " + _colour("nom", "n", c),
    lambda c, b: "фигура " + _colour("gen", "m", c) + " цвета",
    lambda c, b: "фото " + _colour("gen", "f", c) + " фигуры",
    lambda c, b: _colour("nom", "f", c) + " фигура на " + b + " фоне",
)


def describe(sample: Sample, rng: np.random.Generator, kind: str | None = None) -> tuple[str, tuple]:
    """A random Russian caption for ``sample`` and what it mentions.

    ``kind``: ``"full"`` (colour and shape), ``"shape"`` (shape only),
    ``"colour"`` (colour only) or None for a random one (50/30/20 %).
    The second value is ``(colour, shape, background, size)`` with None for
    whatever the caption does not say; :func:`compatibility` uses it.
    """
    bg = _BACKGROUND_TABLE[sample.background]
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
        raise ValueError(f"unknown caption kind {kind!r}")
    said_bg = sample.background if " фоне" in text else None
    said_size = sample.size if size is not None else None
    if rng.random() < 0.25:                        # people often write "е" for "ё"
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


# ---------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------

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
        fake = Sample(None, colour, shape, BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
                      SIZES[rng.integers(len(SIZES))])
        out.append(describe(fake, rng)[0].lower())
    for labels, templates in ((SHAPE_LABELS, SHAPE_TEMPLATES), (COLOUR_LABELS, COLOUR_TEMPLATES)):
        out.extend(zero_shot_prompts(labels, templates))
    return out


def zero_shot_prompts(labels: Iterable[str], templates: Iterable[str]) -> list[str]:
    """Label-major list of prompts: every template for label 0, then label 1, ..."""
    templates = list(templates)
    return [t.format(label) for label in labels for t in templates]


# ---------------------------------------------------------------------------
# RuCLIP preprocessing
# ---------------------------------------------------------------------------

def crop_resize(image: Image.Image, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: RuCLIP's geometric steps (RGB, centre square crop, bilinear resize).

    ``RandomResizedCrop(size, scale=(1, 1), ratio=(1, 1))`` as RuCLIPProcessor
    uses it never finds a full-area square in a non-square image, so it falls
    back to the centre crop of the largest square, top-left at
    ``((h - side) // 2, (w - side) // 2)``; a square image is kept whole.
    (Nearly square images, where ``round(sqrt(w * h)) <= min(w, h)``, get a
    random one-pixel offset there; :func:`render` never makes those.) The
    resize is Pillow's bilinear filter, as torchvision uses on PIL images.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR))


def normalize(pixels: np.ndarray, mean: Sequence[float] = RUCLIP_MEAN,
              std: Sequence[float] = RUCLIP_STD) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W]: ToTensor's /255, then (x - mean) / std."""
    x = pixels.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


def preprocess(images: Sequence[Image.Image], size: int, mean: Sequence[float] = RUCLIP_MEAN,
               std: Sequence[float] = RUCLIP_STD) -> np.ndarray:
    """float32 [N, 3, size, size], as RuCLIPProcessor's image transform (see :func:`crop_resize`)."""
    return normalize(np.stack([crop_resize(img, size) for img in images]), mean, std)
