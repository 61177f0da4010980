"""Rendering the demo pictures: one coloured geometric shape on a background, with pixel noise.

Images are generated non-square; the shape always lies inside the central
square, which is what RuCLIP's preprocessing keeps (centre crop of the largest
square, then a bilinear resize).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from clip_onnx.demo.vocabulary import BACKGROUNDS, reference_rgb
from clip_onnx.errors import InputError

_MIN_SIDE, _MAX_SIDE = 128, 176  # generated image sides (pixels)
# Shape radius / side of the kept square.  At 64 px and 8 px patches a smaller
# star or cross is hardly more than a blob; the demo model is meant to tell them apart.
_MIN_RADIUS, _MAX_RADIUS = 0.26, 0.42
_MAX_OFFSET = 0.2  # shape centre's largest offset from the square's centre / side
_SMALL, _LARGE = 0.31, 0.37  # radius thresholds for the size words (about thirds)


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    colour: str
    shape: str
    background: str
    size: str  # "small", "medium" or "large"


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
        return [
            np.array(
                [
                    [-a, -1],
                    [a, -1],
                    [a, -a],
                    [1, -a],
                    [1, a],
                    [a, a],
                    [a, 1],
                    [-a, 1],
                    [-a, a],
                    [-1, a],
                    [-1, -a],
                    [-a, -a],
                ]
            )
        ]
    if shape == "ромб":
        w = rng.uniform(0.55, 0.72)
        return [np.array([[0, -1], [w, 0], [0, 1], [-w, 0]])]
    if shape == "сердце":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [np.stack([x, y + 2.5], 1) / 16.5]
    raise InputError(f"unknown shape {shape!r}")


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of standard-normal noise that pictures take random windows of (fast)."""
    return np.random.default_rng(7).standard_normal((2 * _MAX_SIDE, 2 * _MAX_SIDE, 3), np.float32)


def _noise(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """float32 [H, W, C] standard-normal noise: a random window of the bank."""
    bank = _noise_bank()
    oy, ox, c = (int(v) for v in rng.integers(0, [bank.shape[0] - height + 1, bank.shape[1] - width + 1, 3]))
    window = bank[oy : oy + height, ox : ox + width]
    return window[..., c : c + 1] if channels == 1 else np.roll(window, c, axis=2)


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
        proj = np.arange(width, dtype=np.float32)[None, :] * np.float32(math.cos(angle)) + np.arange(
            height, dtype=np.float32
        )[:, None] * np.float32(math.sin(angle))
        t = ((proj - proj.min()) / max(float(np.ptp(proj)), 1.0))[..., None]
        return ends[0] + (ends[1] - ends[0]) * t
    raise InputError(f"unknown background {kind!r}")


def render(
    rng: np.random.Generator,
    colour: str | None,
    shape: str,
    background: str | None = None,
    rgb: Sequence[float] | None = None,
) -> Sample:
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

    side = min(width, height)  # the square RuCLIP's crop keeps
    x0, y0 = (width - side) // 2, (height - side) // 2
    rel = float(rng.uniform(_MIN_RADIUS, _MAX_RADIUS))  # radius as a fraction of the square's side
    radius = rel * side
    # Anywhere inside the square, but at most _MAX_OFFSET * side off its centre.
    reach = min(side / 2 - radius * 1.05 - 2, _MAX_OFFSET * side)
    cx = x0 + side / 2 + rng.uniform(-reach, reach)
    cy = y0 + side / 2 + rng.uniform(-reach, reach)
    max_rot = {
        "круг": 180,
        "кольцо": 180,
        "квадрат": 15,
        "ромб": 12,
        "треугольник": 15,
        "звезда": 15,
        "крест": 15,
        "сердце": 15,
    }[shape]
    angle = math.radians(rng.uniform(-max_rot, max_rot))
    stretch = rng.uniform(0.9, 1.1)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    mask_img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask_img)
    for k, poly in enumerate(_unit_polygon(shape, rng)):
        pts = (poly * [stretch, 1 / stretch]) @ rot.T * radius + [cx, cy]
        draw.polygon([tuple(p) for p in pts], fill=255 if k == 0 else 0)
    mask = np.asarray(mask_img, np.float32)[..., None] * np.float32(1 / 255)

    rgb = np.array(reference_rgb(colour) if rgb is None else rgb, np.float32)
    rgb = rgb * np.float32(rng.uniform(0.85, 1.08)) + rng.uniform(-14, 14, 3).astype(np.float32)
    # Mild shading across the shape so it is not perfectly flat.
    gx, gy = (np.float32(v / radius) for v in rng.uniform(-0.08, 0.08, 2))
    shade = (
        1.0
        + gx * (np.arange(width, dtype=np.float32)[None, :] - np.float32(cx))
        + gy * (np.arange(height, dtype=np.float32)[:, None] - np.float32(cy))
    )
    fg = rgb * np.clip(shade, 0.8, 1.2)[..., None]
    img = canvas + (fg - canvas) * mask
    img += np.float32(rng.uniform(0, 10)) * _noise(rng, height, width, 3)
    image = Image.fromarray((np.clip(img, 0, 255) + 0.5).astype(np.uint8), "RGB")

    size = "small" if rel < _SMALL else "large" if rel > _LARGE else "medium"
    return Sample(image, colour, shape, background, size)
