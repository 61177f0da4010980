"""The benchmark's accuracy table: every backend against eager torch fp32, through the gates' own comparator."""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from clip_onnx.benchmark.timing import Backend
from clip_onnx.errors import ParityError
from clip_onnx.parity import THRESHOLDS, ZeroShot, compare

# backend -> the gate whose thresholds its outputs are held to (its precision against fp32).
GATES = MappingProxyType({"torch": "fp32", "torch-fp16": "fp16", "onnxruntime": "fp32", "onnxruntime-int8": "int8",
                          "tensorrt": "fp16"})


def accuracy(backends: Sequence[Backend], feeds: Mapping[str, Mapping[int, Mapping]], padded: str) -> dict:
    """backend -> per tower min cosine and max abs, zero-shot top-1 agreement and whether its gate holds.

    Measured on the largest benchmark batch.  Rows named ``padded`` (the text
    ids every backend also runs padded) count as more textual rows; top-1 uses
    the text as each backend runs it.  Reported, never raised: the benchmark's
    int8 bundle is deliberately ungated.
    """
    reference = next((b for b in backends if b.name == "torch"), None)
    if reference is None:
        return {}
    expected = _outputs(reference, feeds, padded)
    table = {}
    for backend in backends:
        gate = GATES[backend.name]
        try:
            report = compare(f"{backend.name} vs torch", expected, _outputs(backend, feeds, padded), THRESHOLDS[gate],
                             ZeroShot())
        except ParityError as below:
            report = below.report
        table[backend.name] = {
            **{tower: {"min_cosine": min(r.min_cosine for r in report.rows if r.tower == tower),
                       "max_abs": max(r.max_abs for r in report.rows if r.tower == tower)} for tower in expected},
            "top1_agreement": report.top1_agreement, "gate": gate, "passed": not report.failures()}
    return table


def _outputs(backend: Backend, feeds: Mapping[str, Mapping[int, Mapping]], padded: str) -> dict[str, list]:
    out = {}
    # The padded text first, so each tower's last batch, which top-1 reads, is what the backend runs.
    for tower in sorted(feeds, key=lambda t: t != padded):
        feed = feeds[tower][max(feeds[tower])]
        out.setdefault("textual" if tower == padded else tower, []).append(
            _as_numpy(backend.run[tower](backend.prepare(tower, feed))))
    return {tower: out[tower] for tower in ("visual", "textual")}


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, dict):
        x = next(iter(x.values()))
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
