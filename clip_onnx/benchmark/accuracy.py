"""The benchmark's accuracy table: every backend against eager torch fp32, through the gates' own comparator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from clip_onnx.benchmark.timing import Backend
from clip_onnx.errors import ParityError
from clip_onnx.parity import THRESHOLDS, Logits, ZeroShot, compare


def accuracy(backends: Sequence[Backend], feeds: Mapping[str, Mapping[int, Mapping]], padded: str) -> dict:
    """backend -> per tower min cosine and max abs, zero-shot top-1 agreement and whether its gate holds.

    Measured on the largest benchmark batch.  Rows named ``padded`` (the text
    ids every backend also runs padded) count as more textual rows; top-1 uses
    the text as each backend runs it.  Reported, never raised: the benchmark's
    int8 bundle is deliberately ungated.
    """
    reference = next((b for b in backends if b.name == "torch"), None)
    if reference is None:
        # Existing bundles without the source: an fp32 graph stands in for eager torch (its gate proved it equal).
        reference = next((b for b in backends if b.gate == "fp32"), None)
    if reference is None:
        return {}
    expected = _outputs(reference, feeds, padded)
    task = ZeroShot() if "textual" in expected else Logits()
    table = {}
    for backend in backends:
        try:
            report = compare(
                f"{backend.name} vs {reference.name}",
                expected,
                _outputs(backend, feeds, padded),
                THRESHOLDS[backend.gate or "fp16"],
                task,
            )
        except ParityError as below:
            report = below.report
        row = {
            tower: {
                "min_cosine": min(r.min_cosine for r in report.rows if r.tower == tower),
                "max_abs": max(r.max_abs for r in report.rows if r.tower == tower),
            }
            for tower in expected
        }
        row.update(top1_agreement=report.top1_agreement, reference=reference.name)
        if backend.gate:  # a backend with no gate of its own (torch-bf16) is reported, never judged
            row.update(gate=backend.gate, passed=not report.failures())
        table[backend.name] = row
    return table


def _outputs(backend: Backend, feeds: Mapping[str, Mapping[int, Mapping]], padded: str) -> dict[str, list]:
    out = {}
    # The padded text first, so each tower's last batch, which top-1 reads, is what the backend runs.
    for tower in sorted(feeds, key=lambda t: t != padded):
        feed = feeds[tower][max(feeds[tower])]
        out.setdefault("textual" if tower == padded else tower, []).append(
            _as_numpy(backend.run[tower](backend.prepare(tower, feed)))
        )
    return {tower: out[tower] for tower in ("visual", "textual") if tower in out}


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, dict):
        x = next(iter(x.values()))
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
