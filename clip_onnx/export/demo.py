"""The main job on the embedded model: export ruclip-demo, verify it, classify pictures torch-free, compare with eager.

Everything runs offline: the checkpoint ships in ``clip_onnx/assets/ruclip-demo``
and the pictures are generated (coloured shapes, some in colour/shape
combinations the model never saw in training).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from clip_onnx.bundle import Bundle
from clip_onnx.export.families import demo_data, load_model
from clip_onnx.export.pipeline import export_model
from clip_onnx.runtime.model import ClipModel
from clip_onnx.runtime.zero_shot import ensemble, prompts_for, zero_shot_probs

log = logging.getLogger(__name__)

DEMO_MODEL = "ruclip-demo"
TASKS = {"shape": (demo_data.SHAPE_LABELS, demo_data.SHAPE_TEMPLATES, lambda s: s.shape),
         "colour": (demo_data.COLOUR_LABELS, demo_data.COLOUR_TEMPLATES, lambda s: s.colour)}


@dataclass
class TaskResult:
    task: str
    runtime_accuracy: float
    eager_accuracy: float
    agreement: float  # fraction of images where runtime and eager torch pick the same label
    max_prob_diff: float


def run_demo(out: Path, *, images: int = 200, precision: str = "fp32",
             progress: Callable[[str], None] = lambda step: None) -> tuple[Bundle, list, list[TaskResult]]:
    """Export the demo model to ``out`` and evaluate it on ``images`` held-out pictures."""
    model = load_model(DEMO_MODEL)
    bundle = export_model(model, out, overwrite=True, precision=precision, progress=progress)
    runtime = ClipModel.load(bundle.path)
    samples = demo_data.heldout_set(images, combos="unseen")
    pictures = [s.image for s in samples]
    shown = []
    for task, (labels, templates, truth) in TASKS.items():
        result = runtime.classify(pictures[:4], list(labels), list(templates))
        shown += [(task, truth(s), labels[int(p.argmax())], float(p.max())) for s, p in zip(samples[:4], result.probs)]
    results = [_evaluate(task, model, runtime, samples) for task in TASKS]
    return bundle, shown, results


def _evaluate(task: str, model, runtime: ClipModel, samples) -> TaskResult:
    labels, templates, truth = TASKS[task]
    pictures = [s.image for s in samples]
    got = runtime.classify(pictures, list(labels), list(templates)).probs
    want = _eager_probs(model, runtime, pictures, labels, templates)
    answer = np.array([labels.index(truth(s)) for s in samples])
    return TaskResult(task, float((got.argmax(1) == answer).mean()), float((want.argmax(1) == answer).mean()),
                      float((got.argmax(1) == want.argmax(1)).mean()), float(np.abs(got - want).max()))


def _eager_probs(model, runtime: ClipModel, pictures, labels, templates) -> np.ndarray:
    """The same zero-shot computation with eager PyTorch towers in place of the ONNX graphs."""
    with torch.no_grad():
        pixels = torch.from_numpy(runtime.preprocess(pictures))
        image = model.visual.module(pixels).numpy()
        ids = model.tokenize(prompts_for(labels, templates))
        text = model.textual.module(*(torch.from_numpy(v) for v in ids.values())).numpy()
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return zero_shot_probs(image, ensemble(text.reshape(len(templates), len(labels), -1)), runtime.logit_scale)
