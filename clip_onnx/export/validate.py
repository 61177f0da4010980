"""What the gates compare: their inputs, and each stage's outputs on them (eager PyTorch, ONNX graphs).

Parity inputs are real tokenized prompts and preprocessed synthetic photos, run at
batch sizes other than the export example's, so a frozen axis or a wrong
pooling index shows up as a failure rather than passing by coincidence.
``clip_onnx.parity.compare`` judges the outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from clip_onnx.export.families.base import ExportableModel, Tower
from clip_onnx.gate_feeds import FeedMaker, gate_task
from clip_onnx.parity import Logits, ZeroShot
from clip_onnx.runtime.backends.onnxruntime import OnnxRuntimeRunner
from clip_onnx.runtime.preprocess import ImagePreprocessor
from clip_onnx.runtime.tokenizers.base import cut_padding
from clip_onnx.synthetic import synthetic_images

log = logging.getLogger(__name__)

VALIDATION_BATCHES = (1, 3, 8)

# tower -> one feed dict per batch.
Feeds = Mapping[str, Sequence[Mapping[str, np.ndarray]]]


def towers_of(model: ExportableModel) -> tuple[Tower, ...]:
    return (model.visual,) if model.textual is None else (model.visual, model.textual)


def parity_inputs(model: ExportableModel, seed: int = 0) -> dict[str, list[Mapping[str, np.ndarray]]]:
    """Per tower, one feed per validation batch size: the eager -> ONNX fp32 gate's inputs.

    A text graph with a symbolic sequence axis also gets each batch cut to its
    longest prompt, as ClipModel sends it.
    """
    biggest = max(VALIDATION_BATCHES)
    pixels = ImagePreprocessor(model.preprocess)(synthetic_images(biggest, seed))
    feeds = {"visual": [{"pixel_values": pixels[:b]} for b in VALIDATION_BATCHES]}
    if model.textual is None:
        return feeds
    tokens = model.tokenize([model.sample_texts[i % len(model.sample_texts)] for i in range(biggest)])
    feeds["textual"] = [{k: v[:b] for k, v in tokens.items()} for b in VALIDATION_BATCHES]
    if model.textual.trimmable:
        pad_id = model.tokenizer.get("pad_id", 0)
        feeds["textual"] += [cut_padding(f, pad_id) for f in feeds["textual"]]
    return feeds


def trace_example(feeds: Feeds, tower: str, batch: int) -> dict[str, torch.Tensor]:
    """The export's tracing input: the first ``batch`` rows of the largest padded parity batch."""
    feed = feeds[tower][len(VALIDATION_BATCHES) - 1]
    return {k: torch.from_numpy(v[:batch].copy()) for k, v in feed.items()}


def feed_maker(model: ExportableModel) -> FeedMaker:
    """The gates' feed builder for ``model``: its preprocessing, tokenizer, prompts and domain pictures.

    Text stays padded to the full context: the fp16/int8 gate's worst case, and the shape the graphs were traced at.
    """
    tokenize = model.tokenize if model.textual is not None else None
    return FeedMaker(model.preprocess, tokenize, model.sample_texts, model.gate_images or synthetic_images)


def task_of(model: ExportableModel, groups: int = 1) -> ZeroShot | Logits:
    """The top-1 task of a gate on ``model``: see ``gate_feeds.gate_task``."""
    return gate_task(model.kind, groups)


def eager_outputs(model: ExportableModel, feeds: Feeds) -> dict[str, list[np.ndarray]]:
    """Eager PyTorch's output for every feed of every tower in ``feeds``."""
    towers = {t.name: t for t in towers_of(model)}
    with torch.no_grad():
        return {name: [_eager(towers[name], feed) for feed in batches] for name, batches in feeds.items()}


def _eager(tower: Tower, feed: Mapping[str, np.ndarray]) -> np.ndarray:
    return tower.module(*(torch.from_numpy(feed[n]) for n in tower.input_names)).float().numpy()


def graph_outputs(model: ExportableModel, graphs: Mapping[str, Path], feeds: Feeds) -> dict[str, list[np.ndarray]]:
    """ONNX Runtime's output of each tower's graph for every feed of that tower in ``feeds``."""
    outputs = {t.name: t.output_name for t in towers_of(model)}
    return {name: run_graph(graphs[name], outputs[name], batches) for name, batches in feeds.items()}


def run_graph(path: Path, output: str, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
    runner = OnnxRuntimeRunner(path)
    try:
        return [runner.infer(feed)[output] for feed in feeds]
    finally:
        runner.close()
