"""Zero-shot maths shared by the runtime, the demo, the parity gate and the training script.

RuCLIP ``Predictor`` style: every label goes into every template, each
template's normalised text embedding is averaged per label and renormalised,
and images are scored by ``logit_scale * cos`` followed by a softmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def prompts_for(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Template-major prompts, labels lowercased and stripped as ``ruclip.Predictor`` does."""
    return [t.format(label.lower().strip()) for t in templates for label in labels]


def ensemble(per_template: np.ndarray) -> np.ndarray:
    """[templates, labels, D] normalised embeddings -> [labels, D]: mean over templates, renormalised."""
    text = per_template.mean(axis=0)
    return text / np.linalg.norm(text, axis=-1, keepdims=True)


def label_embeddings(
    encode: Callable[[list[str]], np.ndarray], labels: Sequence[str], templates: Sequence[str]
) -> np.ndarray:
    """[labels, D]: every label in every template, encoded by ``encode`` (texts -> normalised [N, D]), ensembled."""
    per_template = np.asarray(encode(prompts_for(labels, templates)))
    return ensemble(per_template.reshape(len(templates), len(labels), -1))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, shifted by the row maximum so large logits cannot overflow."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def zero_shot_probs(image: np.ndarray, text: np.ndarray, logit_scale: float) -> np.ndarray:
    """Softmax over labels of ``logit_scale * cos``; inputs are normalised embeddings."""
    return softmax(logit_scale * (image @ text.T))
