"""Lower an exported fp32 bundle to int8 (or fp16) graphs, tower by tower, behind an accuracy gate.

The gate compares against the fp32 ONNX graphs, which the fp32 gate already
proved equal to eager PyTorch.  If lowering both towers misses the gate, each
tower is tried alone; a tower that cannot be lowered stays fp32 and the
manifest says why.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

from clip_onnx.export import validate
from clip_onnx.export.families.base import ExportableModel
from clip_onnx.runtime.backends.onnxruntime import OnnxRuntimeRunner

log = logging.getLogger(__name__)

TOWERS = ("visual", "textual")


def run_graph(path: Path, output: str, feeds) -> list:
    runner = OnnxRuntimeRunner(path)
    try:
        return [runner.infer(feed)[output] for feed in feeds]
    finally:
        runner.close()


def lower(model: ExportableModel, graphs: Mapping[str, Path], precision: str,
          converters: Sequence[Callable[[Path, Path], dict]], thresholds: validate.Thresholds,
          gate_images: int = validate.GATE_IMAGES) -> dict:
    """Convert ``graphs`` in place where the gate allows; returns the manifest's precision record.

    ``converters`` run from the most to the least aggressive; per tower, the
    first whose outputs meet the cosine threshold is kept (the fp16 block-list
    ladder).  Then zero-shot top-1 agreement decides which towers to lower.
    """
    outputs = {"visual": model.visual.output_name, "textual": model.textual.output_name}
    feeds = validate.gate_inputs(model, gate_images)
    reference = {t: run_graph(graphs[t], outputs[t], feeds[t]) for t in TOWERS}
    candidates, details, lowered, tried = {}, {}, {}, {}
    for tower in TOWERS:
        candidates[tower] = graphs[tower].with_name(f"{graphs[tower].stem}.{precision}.onnx")
        for convert in converters:
            details[tower] = convert(graphs[tower], candidates[tower])
            lowered[tower] = run_graph(candidates[tower], outputs[tower], feeds[tower])
            cosine = validate.min_cosine(reference[tower], lowered[tower])
            tried.setdefault(tower, []).append({**details[tower], "min_cosine": cosine})
            if cosine >= thresholds.min_cosine:
                break
    attempts = []
    chosen = ()
    for combo in (TOWERS, ("visual",), ("textual",)):
        got = {t: lowered[t] if t in combo else reference[t] for t in TOWERS}
        report = validate.gate_report(f"onnx-{precision}[{'+'.join(combo)}]", reference, got, thresholds)
        attempts.append(report.to_dict())
        log.info("%s gate for %s: %s", precision, combo, report.failures() or "pass")
        if not report.failures():
            chosen = combo
            break
    record = {"precision": precision, "gate": attempts, "tried": tried, "towers": {}}
    for tower in TOWERS:
        if tower in chosen:
            os.replace(candidates[tower], graphs[tower])
            record["towers"][tower] = {"precision": precision, **details[tower]}
        else:
            _remove_graph(candidates[tower])
            record["towers"][tower] = {"precision": "fp32", "reason": f"{precision} missed the gate; see 'gate'"}
    return record


def _remove_graph(path: Path) -> None:
    for file in (path, path.with_name(path.name + ".data")):
        file.unlink(missing_ok=True)
