"""What every benchmark backend is fed, made once per run: synthetic pictures and the model's prompts.

Shared by a run exported from a source (``run.py``) and one over existing bundles (``existing.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from clip_onnx.benchmark.timing import Backend

# Rows timing every backend on padded text ids, beside the text each backend runs in practice.
PADDED_TEXT = "textual-padded"


def make_feeds(
    preprocess, tokenize: Callable | None, sample_texts: Sequence[str], batches: Sequence[int]
) -> tuple[dict, dict | None]:
    """tower -> batch -> feed, on synthetic pictures and the model's sample texts; and the padded text ids.

    ``preprocess`` is the model's PreprocessSpec; ``tokenize`` None for a classifier (no text tower).
    """
    from clip_onnx.runtime import ImagePreprocessor
    from clip_onnx.synthetic import synthetic_images

    biggest = max(batches)
    pixels = ImagePreprocessor(preprocess)(synthetic_images(biggest, seed=7))
    feeds = {"visual": {b: {"pixel_values": pixels[:b]} for b in batches}}
    if tokenize is None:
        return feeds, None
    texts = [sample_texts[i % len(sample_texts)] + f" {i}" for i in range(biggest)]
    tokens = tokenize(texts)
    feeds["textual"] = {b: {k: v[:b] for k, v in tokens.items()} for b in batches}
    return feeds, tokens


def runtime_backend(name: str, runners: dict, cut: Callable | None, gate: str | None = "fp32") -> Backend:
    """Runners per tower, fed what ClipModel feeds them: text cut to its longest prompt where the graph allows."""
    run = {t: _runner_call(r) for t, r in runners.items()}
    if cut and "textual" in run:
        run[PADDED_TEXT] = run["textual"]
    return Backend(name, run, prepare=lambda tower, feed: cut(feed) if cut and tower == "textual" else feed, gate=gate)


def _runner_call(runner):
    return lambda feed: runner.infer(feed)
