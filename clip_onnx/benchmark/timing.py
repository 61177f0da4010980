"""Interleaved timing of several backends on the same inputs.

Each repetition runs every backend once, in turn, so slow drift of the machine
(thermal, other processes) lands on all of them alike.  A backend's ``sync``
runs before the clock stops: for CUDA that is ``torch.cuda.synchronize``, so
asynchronous GPU work can never be timed as finished when it was only queued.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Backend:
    name: str
    # tower -> function(batch inputs) -> output; the inputs are prepared outside the clock.
    run: Mapping[str, Callable]
    sync: Callable[[], None] = lambda: None
    prepare: Callable[[str, Mapping], object] = lambda tower, feed: feed
    # The gate (clip_onnx.thresholds row) its outputs are held to against eager torch fp32; None: reported only.
    gate: str | None = "fp32"


@dataclass
class Samples:
    backend: str
    tower: str
    batch: int
    seconds: list[float] = field(default_factory=list)

    def stats(self) -> dict:
        s = np.asarray(self.seconds) * 1000
        median = float(np.median(s))
        return {
            "backend": self.backend,
            "tower": self.tower,
            "batch": self.batch,
            "median_ms": median,
            "p90_ms": float(np.percentile(s, 90)),
            "min_ms": float(s.min()),
            "max_ms": float(s.max()),
            "items_per_s": self.batch / (median / 1000),
            "n": len(s),
        }


def interleaved(
    backends: Sequence[Backend],
    feeds: Mapping[str, Mapping[int, Mapping]],
    *,
    warmup: int,
    repeat: int,
    on_step: Callable[[int, int], None] = lambda done, total: None,
) -> list[Samples]:
    """Time every backend on ``feeds[tower][batch]``; returns one Samples per (backend, tower, batch).

    ``on_step(done, total)`` follows each round of all backends.
    """
    results = []
    total, done = sum(len(by_batch) for by_batch in feeds.values()) * (warmup + repeat), 0
    for tower, by_batch in feeds.items():
        for batch, feed in by_batch.items():
            prepared = {b.name: b.prepare(tower, feed) for b in backends}
            samples = {b.name: Samples(b.name, tower, batch) for b in backends}
            for i in range(warmup + repeat):
                for b in backends:
                    b.sync()
                    start = time.perf_counter()
                    b.run[tower](prepared[b.name])
                    b.sync()
                    if i >= warmup:
                        samples[b.name].seconds.append(time.perf_counter() - start)
                done += 1
                on_step(done, total)
            results.extend(samples.values())
    return results
