"""The engine stage of the gate: a TensorRT plan against the ONNX graph it was built from.

Torch-free: the inputs come from the bundle alone.  Synthetic pictures go
through the bundle's preprocessing, and the manifest's ``sample_texts`` in the
gate templates through its tokenizer, cut to the longest prompt where the graph
allows it, as ClipModel runs them.  Each plan is checked on its own, the other
tower running its ONNX graph, because a runtime may open either plan alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from clip_onnx.bundle import TOWERS, Bundle
from clip_onnx.engines import Profile, chunks
from clip_onnx.gate_feeds import FeedMaker, gate_task
from clip_onnx.parity import GATE_IMAGES, THRESHOLDS, ParityReport, compare
from clip_onnx.runtime.backends import open_runner
from clip_onnx.runtime.backends.base import Runner

log = logging.getLogger(__name__)


def gate_feeds(bundle: Bundle, images: int = GATE_IMAGES, seed: int = 1) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per tower, the gate's feeds in batches of GATE_BATCH, made from ``bundle`` alone."""
    maker = FeedMaker.of_bundle(bundle)
    if not bundle.manifest.sample_texts and maker.tokenize is not None:
        log.info("%s records no sample_texts (exported before clip-onnx did); gating on built-in prompts", bundle.path)
    return maker.gate(images, seed)


class EngineGate:
    """Checks plans of ``bundle`` against its ONNX graphs; the inputs and ONNX outputs are made once, on first use."""

    def __init__(self, bundle: Bundle, images: int = GATE_IMAGES):
        self.bundle = bundle
        self.images = images
        self._feeds: dict | None = None
        self._reference: dict | None = None

    def check(self, tower: str, plan: Runner, profile: Profile) -> ParityReport:
        """Compare ``plan`` (a runner for ``tower``'s plan) with the ONNX graphs; ParityError below the gate."""
        reference = self.reference()
        output = self.bundle.graph(tower).output
        got = dict(reference)
        got[tower] = [np.concatenate([run_within(plan, feed, output, profile) for feed in self._feeds[tower]])]
        return compare(f"tensorrt[{tower}]", reference, got, THRESHOLDS["engine"], gate_task(self.bundle.kind))

    def reference(self) -> dict[str, list[np.ndarray]]:
        """Per tower, ONNX Runtime's outputs on every gate feed, as one batch."""
        if self._reference is None:
            self._feeds = gate_feeds(self.bundle, self.images)
            self._reference = {}
            for tower in (t for t in TOWERS if t in self._feeds):
                output = self.bundle.graph(tower).output
                with open_runner(self.bundle, tower, "onnxruntime") as runner:
                    self._reference[tower] = [np.concatenate([runner.infer(f)[output] for f in self._feeds[tower]])]
        return self._reference


def run_within(runner: Runner, feed: Mapping[str, np.ndarray], output: str, profile: Profile) -> np.ndarray:
    """``runner``'s ``output`` on ``feed`` in batches the profile admits.

    A chunk smaller than the profile's min batch is topped up by repeating its
    last row; those rows' outputs are dropped.
    """
    total = len(next(iter(feed.values())))
    parts = []
    for part in chunks(total, profile.max_batch):
        chunk = {k: v[part] for k, v in feed.items()}
        rows = part.stop - part.start
        if rows < profile.min_batch:
            chunk = {
                k: np.concatenate([v, np.repeat(v[-1:], profile.min_batch - rows, axis=0)]) for k, v in chunk.items()
            }
        parts.append(runner.infer(chunk)[output][:rows])
    return np.concatenate(parts)
