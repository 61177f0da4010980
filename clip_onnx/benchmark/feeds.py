"""What every benchmark backend is fed, made once per run: synthetic pictures and the model's prompts.

Shared by a run exported from a source (``run.py``) and one over existing bundles (``existing.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from clip_onnx.benchmark.timing import Backend
from clip_onnx.gate_feeds import FeedMaker
from clip_onnx.runtime import cut_padding

# Rows timing every backend on padded text ids, beside the text each backend runs in practice.
PADDED_TEXT = "textual-padded"


def model_feeds(model) -> FeedMaker:
    """The feed builder of an exportable model (the SOURCE of a run), cutting texts where ClipModel would."""
    tokenize = model.tokenize if model.textual is not None else None
    pad_id = int(model.tokenizer.get("pad_id", 0)) if model.textual is not None and model.textual.trimmable else None
    return FeedMaker(model.preprocess, tokenize, model.sample_texts, pad_id=pad_id)


def text_cut(maker: FeedMaker) -> Callable | None:
    """The runtime's cut of a text feed to its longest prompt, where the textual graph allows it."""
    pad_id = maker.pad_id
    return None if pad_id is None else lambda feed: cut_padding(feed, pad_id)


def runtime_backend(name: str, runners: dict, cut: Callable | None, gate: str | None = "fp32") -> Backend:
    """Runners per tower, fed what ClipModel feeds them: text cut to its longest prompt where the graph allows."""
    run = {t: _runner_call(r) for t, r in runners.items()}
    if cut and "textual" in run:
        run[PADDED_TEXT] = run["textual"]
    return Backend(name, run, prepare=lambda tower, feed: cut(feed) if cut and tower == "textual" else feed, gate=gate)


def _runner_call(runner):
    return lambda feed: runner.infer(feed)
