"""The comparator behind every gate: one stage's outputs against the stage it was made from.

Stages: eager PyTorch -> ONNX fp32 (every export), ONNX fp32 -> fp16/int8 graphs
(``--precision``), ONNX graph -> TensorRT plan (``build-engine``); the benchmark's
accuracy table uses the same comparison.  Each output is checked by cosine (and,
where the table says, max abs difference), and the whole by top-1 agreement on
the model's own task: zero-shot image -> text for CLIP, the argmax class for a
classifier.  Thresholds come from ``clip_onnx.thresholds``.  Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from clip_onnx.errors import InputError, ParityError
from clip_onnx.thresholds import GATE_IMAGES, THRESHOLDS, Thresholds

__all__ = [
    "GATE_BATCH",
    "GATE_IMAGES",
    "GATE_TEMPLATES",
    "THRESHOLDS",
    "Logits",
    "ParityReport",
    "ParityRow",
    "Thresholds",
    "ZeroShot",
    "compare",
    "gate_prompts",
    "min_cosine",
    "top1_agreement",
]

# Prompt shapes that widen the text side of the fp16/int8 and engine gates: one zero-shot task each.
GATE_TEMPLATES = ("{}", "фото: {}", "a photo of {}", "на картинке {}, крупным планом", "{}. {}")
# The fp16/int8 and engine gates feed this many pictures or prompts per batch.
GATE_BATCH = 16

# tower -> one output array per batch fed, in feed order.
Outputs = Mapping[str, Sequence[np.ndarray]]


def gate_prompts(sample_texts: Sequence[str]) -> list[str]:
    """The gate's prompts: every sample text in every GATE_TEMPLATES shape, template-major."""
    return [t.format(s, s) for t in GATE_TEMPLATES for s in sample_texts]


@dataclass(frozen=True)
class ZeroShot:
    """CLIP's task: each image's best-matching text, over the last batch of each tower.

    With ``groups`` > 1 the texts are that many equal consecutive blocks (one per
    prompt template), each its own zero-shot task.
    """

    groups: int = 1

    def top1(self, reference: Outputs, candidate: Outputs) -> float:
        return top1_agreement(
            reference["visual"][-1],
            reference["textual"][-1],
            candidate["visual"][-1],
            candidate["textual"][-1],
            self.groups,
        )


@dataclass(frozen=True)
class Logits:
    """A classifier's task: each image's argmax class, over the last visual batch."""

    def top1(self, reference: Outputs, candidate: Outputs) -> float:
        ref, got = reference["visual"][-1], candidate["visual"][-1]
        return float((ref.argmax(axis=1) == got.argmax(axis=1)).mean())


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
            out.append(
                f"{self.stage} top-1 agreement {self.top1_agreement:.2%} over {self.pairs} images "
                f"< {t.min_top1_agreement:.2%}"
            )
        return out

    def to_dict(self) -> dict:
        """The record a manifest's ``parity`` list (and a plan's record) stores."""
        return {
            "stage": self.stage,
            "thresholds": asdict(self.thresholds),
            "top1_agreement": self.top1_agreement,
            "images": self.pairs,
            "rows": [asdict(r) for r in self.rows],
            "passed": not self.failures(),
        }


def compare(
    stage: str,
    reference: Outputs,
    candidate: Outputs,
    thresholds: Thresholds,
    task: ZeroShot | Logits,
    *,
    feeds: Mapping[str, Sequence[Mapping[str, np.ndarray]]] | None = None,
) -> ParityReport:
    """Compare ``candidate`` with ``reference`` batch by batch; raises ParityError listing every failure.

    One row per tower and batch (pass one concatenated batch per tower for one row
    per tower); ``feeds``, the inputs both were computed from, add each text
    batch's sequence length to its row.  The ParityError carries the report.
    """
    if set(candidate) != set(reference):
        raise InputError(f"stage {stage!r}: candidate has towers {sorted(candidate)}, reference {sorted(reference)}")
    rows = []
    for tower, batches in reference.items():
        if len(candidate[tower]) != len(batches):
            raise InputError(f"stage {stage!r}: {len(candidate[tower])} {tower} batches against {len(batches)}")
        for i, (ref, got) in enumerate(zip(batches, candidate[tower], strict=True)):
            feed = feeds[tower][i] if feeds else {}
            seq = feed["input_ids"].shape[1] if "input_ids" in feed else None
            rows.append(
                ParityRow(stage, tower, len(ref), float(np.abs(ref - got).max()), min_cosine([ref], [got]), seq)
            )
    report = ParityReport(stage, rows, task.top1(reference, candidate), len(reference["visual"][-1]), thresholds)
    failures = report.failures()
    if failures:
        raise ParityError(failures, report)
    return report


def min_cosine(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    """The lowest cosine between corresponding rows of two stages' outputs (batches joined)."""
    return float(_cosine(np.concatenate(reference), np.concatenate(candidate)).min())


def top1_agreement(
    ref_img: np.ndarray, ref_txt: np.ndarray, img: np.ndarray, txt: np.ndarray, groups: int = 1
) -> float:
    """Fraction of images whose best-matching text is the same under both models.

    With ``groups`` > 1 the texts are that many equal consecutive blocks (one
    per prompt template), each its own zero-shot task; the result is their mean.
    Otherwise the argmax would mostly pick between templates of one text.
    """
    ref_img, img = _normalize(ref_img), _normalize(img)
    scores = []
    for r, t in zip(np.split(_normalize(ref_txt), groups), np.split(_normalize(txt), groups), strict=True):
        scores.append(float(((ref_img @ r.T).argmax(axis=1) == (img @ t.T).argmax(axis=1)).mean()))
    return float(np.mean(scores))


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(_normalize(a.astype(np.float64)) * _normalize(b.astype(np.float64)), axis=-1)
