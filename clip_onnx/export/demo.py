"""The main job on the embedded model: export ruclip-demo, verify it, classify pictures torch-free, compare with eager.

Everything runs offline: the checkpoint ships in ``clip_onnx/assets/ruclip-demo``
and the pictures are generated (coloured shapes, some in colour/shape
combinations the model never saw in training).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clip_onnx import demo
from clip_onnx.bundle import Bundle
from clip_onnx.export.families import load_model
from clip_onnx.export.options import ExportOptions
from clip_onnx.export.pipeline import export_model
from clip_onnx.runtime.model import ClipModel
from clip_onnx.runtime.zero_shot import label_embeddings, zero_shot_probs

log = logging.getLogger(__name__)

DEMO_MODEL = "ruclip-demo"
TASKS = {
    "shape": (demo.SHAPE_LABELS, demo.SHAPE_TEMPLATES, lambda s: s.shape),
    "colour": (demo.COLOUR_LABELS, demo.COLOUR_TEMPLATES, lambda s: s.colour),
}


@dataclass
class TaskResult:
    task: str
    runtime_accuracy: float
    eager_accuracy: float
    agreement: float  # fraction of images where runtime and eager torch pick the same label
    max_prob_diff: float


def run_demo(
    out: Path, *, images: int = 200, precision: str = "fp32", progress: Callable[[str], None] = lambda step: None
) -> tuple[Bundle, list, list[TaskResult]]:
    """Export the demo model to ``out`` and evaluate it on ``images`` held-out pictures."""
    model = load_model(DEMO_MODEL)
    bundle = export_model(model, out, ExportOptions(precision=precision, overwrite=True), progress=progress)
    runtime = ClipModel.load(bundle.path)
    samples = demo.heldout_set(images, combos="unseen")
    pictures = [s.image for s in samples]
    shown = []
    for task, (labels, templates, truth) in TASKS.items():
        result = runtime.classify(pictures[:4], list(labels), list(templates))
        shown += [
            (task, truth(s), labels[int(p.argmax())], float(p.max()))
            for s, p in zip(samples[:4], result.probs, strict=True)
        ]
    results = [_evaluate(task, model, runtime, samples) for task in TASKS]
    return bundle, shown, results


def _evaluate(task: str, model, runtime: ClipModel, samples) -> TaskResult:
    labels, templates, truth = TASKS[task]
    pictures = [s.image for s in samples]
    got = runtime.classify(pictures, list(labels), list(templates)).probs
    want = _eager_probs(model, runtime, pictures, labels, templates)
    answer = np.array([labels.index(truth(s)) for s in samples])
    return TaskResult(
        task,
        float((got.argmax(1) == answer).mean()),
        float((want.argmax(1) == answer).mean()),
        float((got.argmax(1) == want.argmax(1)).mean()),
        float(np.abs(got - want).max()),
    )


def _eager_probs(model, runtime: ClipModel, pictures, labels, templates) -> np.ndarray:
    """The same zero-shot computation with eager PyTorch towers in place of the ONNX graphs."""

    def encode_text(prompts: list[str]) -> np.ndarray:
        feed = model.tokenize(prompts)
        return _unit(model.textual.module(*(torch.from_numpy(feed[n]) for n in model.textual.input_names)).numpy())

    with torch.no_grad():
        image = _unit(model.visual.module(torch.from_numpy(runtime.preprocess(pictures))).numpy())
        text = label_embeddings(encode_text, labels, templates)
    return zero_shot_probs(image, text, runtime.logit_scale)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)
