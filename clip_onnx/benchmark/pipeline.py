"""The torch-free work around the graphs: decode, preprocess, tokenize, and the whole call end to end.

Stage rates are per core: they are measured on one thread (the numpy/Pillow
work here is single-threaded anyway), so they compare across machines of any
core count; the end-to-end figures use the runtime as a worker would, with its
defaults.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_SIZE = (640, 480)  # a typical decoded photo, larger than every model's input


def _rate(fn: Callable[[], int], min_seconds: float = 1.0, min_runs: int = 3) -> float:
    """Items per second of ``fn`` (which returns how many items it handled), after one warm-up call."""
    fn()
    items, runs, start = 0, 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < min_seconds:
        items += fn()
        runs += 1
    return items / (time.perf_counter() - start)


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def photos(count: int, seed: int = 3) -> list[bytes]:
    """JPEG-encoded photo-sized pictures (smooth colour fields plus noise, so JPEG has work to do)."""
    from clip_onnx.synthetic import synthetic_images

    out = []
    for img in synthetic_images(count, seed):
        buf = io.BytesIO()
        img.resize(PHOTO_SIZE).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def measure_pipeline(bundle_path: Path, prompts: list[str], *, repeat: int = 10) -> dict:
    """Stage rates and end-to-end latencies for the runtime on ``bundle_path``."""
    from clip_onnx.runtime import ClipModel, load_tokenizer

    model = ClipModel.load(bundle_path)
    jpegs = photos(32)
    decoded = [Image.open(io.BytesIO(b)).convert("RGB") for b in jpegs]
    unique = [f"{p} {i}" for i, p in enumerate(prompts * (2000 // max(1, len(prompts)) + 1))][:2000]

    def items(fn: Callable, batch: list) -> Callable[[], int]:
        return lambda: len(fn(batch))

    # Fresh tokenizers have empty caches; building them (reading the vocabulary) stays off the clock.
    fresh = [load_tokenizer(model.bundle.manifest.tokenizer, model.bundle.path) for _ in range(3)]
    start = time.perf_counter()
    for tokenizer in fresh:
        tokenizer(unique)
    cold_rate = len(fresh) * len(unique) / (time.perf_counter() - start)

    result = {
        "preprocess_images_per_s": _rate(items(model.preprocess, decoded)),
        "decode_preprocess_images_per_s": _rate(items(model.preprocess, jpegs)),
        "tokenize_prompts_per_s_unique": cold_rate,
        "tokenize_prompts_per_s_repeated": _rate(lambda: len(model.tokenize(unique)["input_ids"])),
        "image_size": model.preprocess.spec.image_size,
        "photo_size": list(PHOTO_SIZE),
        "end_to_end_ms": {},
    }
    for batch in (1, 8):
        result["end_to_end_ms"][f"image_jpeg_batch{batch}"] = _median_ms(
            lambda batch=batch: model.encode_image(jpegs[:batch]), repeat
        )
        result["end_to_end_ms"][f"text_batch{batch}"] = _median_ms(
            lambda batch=batch: model.encode_text([f"{p} {time.perf_counter_ns()}" for p in unique[:batch]]), repeat
        )
    return result


def markdown(pipeline: dict) -> list[str]:
    p = pipeline
    lines = [
        "",
        f"Runtime stages, one thread (photos {p['photo_size'][0]}x{p['photo_size'][1]} JPEG, "
        f"model input {p['image_size']} px):",
        "",
        "| stage | rate |",
        "|---|---|",
        f"| preprocess decoded images | {p['preprocess_images_per_s']:.0f} images/s |",
        f"| decode JPEG + preprocess | {p['decode_preprocess_images_per_s']:.0f} images/s |",
        f"| tokenize, unique prompts | {p['tokenize_prompts_per_s_unique']:.0f} prompts/s |",
        f"| tokenize, repeated prompts (LRU cache) | {p['tokenize_prompts_per_s_repeated']:.0f} prompts/s |",
        "",
        "| end to end (runtime, onnxruntime fp32) | median ms |",
        "|---|---|",
    ]
    for name, ms in p["end_to_end_ms"].items():
        lines.append(f"| {name.replace('_', ' ')} | {ms:.1f} |")
    return lines
