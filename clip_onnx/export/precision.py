"""Lower an exported fp32 bundle to int8 (or fp16) graphs, tower by tower, behind an accuracy gate.

The gate compares against the fp32 ONNX graphs, which the fp32 gate already
proved equal to eager PyTorch.  If lowering both towers misses the gate, each
tower is tried alone; a tower that cannot be lowered stays fp32 and the
manifest says why.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

from clip_onnx.bundle import TOWERS
from clip_onnx.export import validate
from clip_onnx.export.families.base import ExportableModel
from clip_onnx.runtime.backends.onnxruntime import OnnxRuntimeRunner

log = logging.getLogger(__name__)



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
            problem = load_problem(candidates[tower])
            if problem:
                log.warning("%s %s graph (%s) does not load: %s", precision, tower, details[tower], problem)
                tried.setdefault(tower, []).append({**details[tower], "error": problem})
                lowered.pop(tower, None)
                continue
            lowered[tower] = run_graph(candidates[tower], outputs[tower], feeds[tower])
            cosine = validate.min_cosine(reference[tower], lowered[tower])
            tried.setdefault(tower, []).append({**details[tower], "min_cosine": cosine})
            if cosine >= thresholds.min_cosine:
                break
    attempts = []
    chosen = ()
    for combo in (TOWERS, ("visual",), ("textual",)):
        if not set(combo) <= set(lowered):
            continue                                    # no candidate of that tower loads
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
            why = "missed the gate; see 'gate'" if tower in lowered else "no converted graph loads; see 'tried'"
            record["towers"][tower] = {"precision": "fp32", "reason": f"{precision} {why}"}
    return record


_LOAD_PROBE = "import sys, onnxruntime as o; o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"


def load_problem(path: Path) -> str | None:
    """Why ONNX Runtime cannot open ``path`` (None if it can), asked in a child process.

    Converted graphs can crash onnxruntime outright: an fp16 ViT-H-14 visual
    graph segfaults in its ORT_ENABLE_ALL optimizers (1.32, CPU).  In a child
    process that costs one rung of the ladder instead of the export.
    """
    result = subprocess.run([sys.executable, "-c", _LOAD_PROBE, str(path)], capture_output=True, text=True)
    if result.returncode < 0:
        return f"onnxruntime crashed opening it (signal {-result.returncode})"
    if result.returncode:
        lines = result.stderr.strip().splitlines() or ["exit status %d" % result.returncode]
        return lines[-1][-400:]
    return None


def _remove_graph(path: Path) -> None:
    for file in (path, path.with_name(path.name + ".data")):
        file.unlink(missing_ok=True)
