"""The parity gate: exported graphs must reproduce eager PyTorch on realistic inputs.

Inputs are real tokenized prompts and preprocessed synthetic photos, run at
batch sizes other than the export example's, so a frozen axis or a wrong
pooling index shows up as a failure rather than passing by coincidence.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from clip_onnx.errors import ParityError
from clip_onnx.export.families.base import ExportableModel, Tower
from clip_onnx.runtime.preprocess import ImagePreprocessor

log = logging.getLogger(__name__)

VALIDATION_BATCHES = (1, 3, 8)


@dataclass(frozen=True)
class Thresholds:
    min_cosine: float
    max_abs: float | None
    min_top1_agreement: float


FP32 = Thresholds(min_cosine=0.99999, max_abs=1e-4, min_top1_agreement=1.0)


@dataclass(frozen=True)
class ParityRow:
    stage: str
    tower: str
    batch: int
    max_abs: float
    min_cosine: float
    # Text rows: the sequence length fed; a graph with a symbolic sequence axis is checked
    # both padded to the context and cut to the longest prompt.
    seq: int | None = None

    @property
    def where(self) -> str:
        return f"{self.tower} batch {self.batch}" + (f" seq {self.seq}" if self.seq else "")


@dataclass
class ParityReport:
    stage: str
    rows: list[ParityRow]
    top1_agreement: float
    pairs: int
    thresholds: Thresholds

    def failures(self) -> list[str]:
        out = []
        t = self.thresholds
        for r in self.rows:
            if r.min_cosine < t.min_cosine:
                out.append(f"{r.stage} {r.where}: cosine {r.min_cosine:.7f} < {t.min_cosine}")
            if t.max_abs is not None and r.max_abs > t.max_abs:
                out.append(f"{r.stage} {r.where}: max abs {r.max_abs:.3g} > {t.max_abs:g}")
        if self.top1_agreement < t.min_top1_agreement:
            out.append(f"{self.stage} zero-shot top-1 agreement {self.top1_agreement:.2%} over {self.pairs} images "
                       f"< {t.min_top1_agreement:.2%}")
        return out

    def to_dict(self) -> dict:
        return {"stage": self.stage, "thresholds": asdict(self.thresholds), "top1_agreement": self.top1_agreement,
                "images": self.pairs, "rows": [asdict(r) for r in self.rows], "passed": not self.failures()}


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


def validation_inputs(model: ExportableModel, seed: int = 0) -> dict[str, list[Mapping[str, np.ndarray]]]:
    """Per tower, one feed dict per validation batch size."""
    biggest = max(VALIDATION_BATCHES)
    pixels = ImagePreprocessor(model.preprocess)(synthetic_images(biggest, seed))
    texts = [model.sample_texts[i % len(model.sample_texts)] for i in range(biggest)]
    tokens = model.tokenize(texts)
    return {
        "visual": [{"pixel_values": pixels[:b]} for b in VALIDATION_BATCHES],
        "textual": [{k: v[:b] for k, v in tokens.items()} for b in VALIDATION_BATCHES],
    }


def eager_outputs(tower: Tower, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
    with torch.no_grad():
        return [tower.module(*(torch.from_numpy(f[n]) for n in tower.input_names)).float().numpy() for f in feeds]


def compare(stage: str, model: ExportableModel, feeds: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
            reference: Mapping[str, list[np.ndarray]], run: Callable[[str, Mapping[str, np.ndarray]], np.ndarray],
            thresholds: Thresholds) -> ParityReport:
    """Run ``run(tower, feed)`` on every feed and compare with ``reference`` outputs."""
    rows, got = [], {}
    for tower in ("visual", "textual"):
        got[tower] = [run(tower, feed) for feed in feeds[tower]]
        for feed, ref, out in zip(feeds[tower], reference[tower], got[tower]):
            seq = feed["input_ids"].shape[1] if "input_ids" in feed else None
            rows.append(ParityRow(stage, tower, len(ref), float(np.abs(ref - out).max()), float(_cosine(ref, out).min()),
                                  seq))
    agreement = top1_agreement(reference["visual"][-1], reference["textual"][-1], got["visual"][-1], got["textual"][-1])
    return ParityReport(stage, rows, agreement, len(reference["visual"][-1]), thresholds)


def top1_agreement(ref_img, ref_txt, img, txt, groups: int = 1) -> float:
    """Fraction of images whose best-matching text is the same under both models.

    With ``groups`` > 1 the texts are that many equal consecutive blocks (one
    per prompt template), each its own zero-shot task; the result is their mean.
    Otherwise the argmax would mostly pick between templates of one text.
    """
    ref_img, img = _normalize(ref_img), _normalize(img)
    scores = []
    for r, t in zip(np.split(_normalize(ref_txt), groups), np.split(_normalize(txt), groups)):
        scores.append(float(((ref_img @ r.T).argmax(axis=1) == (img @ t.T).argmax(axis=1)).mean()))
    return float(np.mean(scores))


def check(report: ParityReport) -> None:
    failures = report.failures()
    if failures:
        raise ParityError(failures)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(_normalize(a.astype(np.float64)) * _normalize(b.astype(np.float64)), axis=-1)


INT8 = Thresholds(min_cosine=0.998, max_abs=None, min_top1_agreement=0.99)
FP16 = Thresholds(min_cosine=0.999, max_abs=None, min_top1_agreement=0.995)
GATE_IMAGES = 500
# Prompt shapes used to widen the text side of the low-precision gate.
_GATE_TEMPLATES = ("{}", "фото: {}", "a photo of {}", "на картинке {}, крупным планом", "{}. {}")


def gate_inputs(model: ExportableModel, images: int = GATE_IMAGES, seed: int = 1) -> dict[str, list[Mapping[str, np.ndarray]]]:
    """Feeds for the fp16/int8 gates: ``images`` pictures and a few dozen prompts, in batches of 16.

    The pictures are the model's own ``gate_images`` where it has them, else synthetic photos.
    """
    pictures = model.gate_images or synthetic_images
    texts = [t.format(s, s) for t in _GATE_TEMPLATES for s in model.sample_texts]
    tokens = model.tokenize(texts)
    preprocess = ImagePreprocessor(model.preprocess)
    visual = [{"pixel_values": preprocess(pictures(min(16, images - start), seed + start))}
              for start in range(0, images, 16)]
    textual = [{k: v[s:s + 16] for k, v in tokens.items()} for s in range(0, len(texts), 16)]
    return {"visual": visual, "textual": textual}


def min_cosine(reference: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    return float(_cosine(np.concatenate(reference), np.concatenate(got)).min())


def gate_report(stage: str, reference: Mapping[str, list[np.ndarray]], got: Mapping[str, list[np.ndarray]],
                thresholds: Thresholds) -> ParityReport:
    """Compare whole gate runs: one row per tower, top-1 over every image against every prompt."""
    ref = {k: np.concatenate(v) for k, v in reference.items()}
    out = {k: np.concatenate(v) for k, v in got.items()}
    rows = [ParityRow(stage, tower, len(ref[tower]), float(np.abs(ref[tower] - out[tower]).max()),
                      float(_cosine(ref[tower], out[tower]).min())) for tower in ("visual", "textual")]
    agreement = top1_agreement(ref["visual"], ref["textual"], out["visual"], out["textual"], len(_GATE_TEMPLATES))
    return ParityReport(stage, rows, agreement, len(ref["visual"]), thresholds)
