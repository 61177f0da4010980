"""Synthetic photo-like pictures for parity gates, tests and benchmarks: torch-free, deterministic per seed."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def synthetic_images(count: int, seed: int = 0) -> list[Image.Image]:
    """Photo-like test images: gradients, shapes and noise, in varied sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        w, h = (int(v) for v in rng.integers(160, 640, size=2))
        base = np.linspace(rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), w, dtype=np.float32)
        pixels = np.broadcast_to(base, (h, w, 3)) + rng.normal(0, 12, (h, w, 3))
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            box = (x0, y0, x0 + int(rng.integers(10, w - x0)), y0 + int(rng.integers(10, h - y0)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        images.append(img)
    return images
