"""Lower exported fp32 graphs to fp16 or int8, tower by tower, behind the gate: one loop for every model kind.

Per tower, the precision's ladder of converters runs from the most to the least
aggressive.  ONNX Runtime first opens each converted graph in a child process
(a converted graph can crash it outright); the first whose outputs meet the
cosine threshold against the fp32 graph is kept.  Then top-1 agreement on the
model's task (zero-shot for CLIP, logits for a classifier) decides which towers
to lower: all of them, else each alone.  The gate compares with the fp32 ONNX
graphs, which the fp32 gate already proved equal to eager PyTorch.  A tower
that cannot be lowered stays fp32, and the manifest says why.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from clip_onnx.errors import ExportError, ParityError
from clip_onnx.export import validate
from clip_onnx.export.families.base import ExportableModel
from clip_onnx.export.fp16 import FP16_LADDER, fp16_converter
from clip_onnx.export.gate_data import GatePlan, plan_gate
from clip_onnx.export.int8 import INT8_LADDER
from clip_onnx.parity import compare, min_cosine
from clip_onnx.thresholds import PRECISIONS

log = logging.getLogger(__name__)

# precision -> converters ``convert(source, target) -> details``, from the most to the least aggressive.
LADDERS: Mapping[str, tuple[Callable[[Path, Path], dict], ...]] = MappingProxyType(
    {"int8": INT8_LADDER, "fp16": tuple(fp16_converter(block) for block in FP16_LADDER)}
)
if set(LADDERS) != set(PRECISIONS) - {"fp32"}:  # every lowered precision of the gate table has a ladder
    raise ImportError(f"ladders for {sorted(LADDERS)}, but the gate table has {PRECISIONS}")


@dataclass
class _Climb:
    """One tower's way up the ladder: the converted graph on disk and what each rung gave."""

    candidate: Path
    details: dict = field(default_factory=dict)
    outputs: list | None = None  # the candidate's gate outputs; None when it does not load
    tried: list = field(default_factory=list)


def lower(
    model: ExportableModel,
    graphs: Mapping[str, Path],
    precision: str,
    plan: GatePlan | None = None,
    *,
    gate: bool = True,
) -> dict:
    """Convert ``graphs`` in place where the gate allows; returns the manifest's precision record.

    ``plan`` holds the gate's inputs and thresholds (default: the built-in ones,
    see ``gate_data.plan_gate``).  ``gate=False`` converts every tower with the
    ladder's first rung and checks only that ONNX Runtime opens the result; the
    record marks those graphs ungated.
    """
    if not gate:
        return _lower_ungated(model, graphs, precision)
    plan = plan or plan_gate(model, precision)
    towers = [t.name for t in validate.towers_of(model)]
    outputs = {t.name: t.output_name for t in validate.towers_of(model)}
    thresholds, feeds = plan.thresholds, plan.feeds
    reference = validate.graph_outputs(model, graphs, feeds)
    climbs = {
        t: _climb(LADDERS[precision], graphs[t], precision, outputs[t], feeds[t], reference[t], thresholds.min_cosine)
        for t in towers
    }
    chosen, attempts = (), []
    for combo in [tuple(towers)] + ([(t,) for t in towers] if len(towers) > 1 else []):
        if any(climbs[t].outputs is None for t in combo):
            continue  # no candidate of that tower loads
        got = {t: climbs[t].outputs if t in combo else reference[t] for t in towers}
        try:
            report = compare(
                f"onnx-{precision}[{'+'.join(combo)}]", _joined(reference), _joined(got), thresholds, plan.task
            )
        except ParityError as missed:
            report = missed.report
        attempts.append(report.to_dict())
        log.info("%s gate for %s: %s", precision, combo, report.failures() or "pass")
        if not report.failures():
            chosen = combo
            break
    record = {
        "precision": precision,
        "gate": attempts,
        "tried": {t: c.tried for t, c in climbs.items()},
        "towers": {},
        "inputs": plan.record,
    }
    for tower, climb in climbs.items():
        if tower in chosen:
            _swap_graph(climb.candidate, graphs[tower])
            record["towers"][tower] = {"precision": precision, **climb.details}
        else:
            _remove_graph(climb.candidate)
            loads = climb.outputs is not None
            why = "missed the gate; see 'gate'" if loads else "no converted graph loads; see 'tried'"
            record["towers"][tower] = {"precision": "fp32", "reason": f"{precision} {why}"}
    return record


def _climb(
    ladder: Sequence[Callable[[Path, Path], dict]],
    graph: Path,
    precision: str,
    output: str,
    feeds: list,
    reference: list,
    cosine_needed: float,
) -> _Climb:
    """Convert ``graph`` rung by rung until a graph that loads meets ``cosine_needed``; the last rung stays on disk."""
    climb = _Climb(graph.with_name(f"{graph.stem}.{precision}.onnx"))
    for convert in ladder:
        climb.details = convert(graph, climb.candidate)
        problem = load_problem(climb.candidate)
        if problem:
            log.warning("%s %s (%s) does not load: %s", precision, graph.name, climb.details, problem)
            climb.tried.append({**climb.details, "error": problem})
            climb.outputs = None
            continue
        climb.outputs = validate.run_graph(climb.candidate, output, feeds)
        cosine = min_cosine(reference, climb.outputs)
        climb.tried.append({**climb.details, "min_cosine": cosine})
        if cosine >= cosine_needed:
            break
    return climb


def _lower_ungated(model: ExportableModel, graphs: Mapping[str, Path], precision: str) -> dict:
    record = {"precision": precision, "gate": [], "tried": {}, "towers": {}}
    for tower in validate.towers_of(model):
        graph = graphs[tower.name]
        candidate = graph.with_name(f"{graph.stem}.{precision}.onnx")
        details = LADDERS[precision][0](graph, candidate)
        problem = load_problem(candidate)
        if problem:
            _remove_graph(candidate)
            raise ExportError(
                f"the ungated {precision} {tower.name} graph ({details}) does not load in ONNX "
                f"Runtime: {problem}; export with the gate on to fall back along the ladder"
            )
        _swap_graph(candidate, graph)
        record["towers"][tower.name] = {"precision": precision, **details, "gate": "off"}
    log.warning("%s graphs written without the gate: their accuracy is unverified", precision)
    return record


def _joined(outputs: Mapping[str, list]) -> dict[str, list]:
    """All of a tower's gate batches as one, so the report has one row per tower."""
    return {tower: [np.concatenate(batches)] for tower, batches in outputs.items()}


_LOAD_PROBE = "import sys, onnxruntime as o; o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"


def load_problem(path: Path) -> str | None:
    """Why ONNX Runtime cannot open ``path`` (None if it can), asked in a child process.

    Converted graphs can crash onnxruntime outright (see benchmarks/NOTES.md); in a
    child process that costs one rung of the ladder instead of the export.
    """
    result = subprocess.run([sys.executable, "-c", _LOAD_PROBE, str(path)], capture_output=True, text=True)
    if result.returncode < 0:
        return f"onnxruntime crashed opening it (signal {-result.returncode})"
    if result.returncode:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        return lines[-1][-400:]
    return None


def _swap_graph(candidate: Path, graph: Path) -> None:
    """Put ``candidate`` in ``graph``'s place, external data included, leaving no stale ``graph.onnx.data``.

    A graph's external data must be ``<graph file>.data`` (the bundle lists a tower's files by that
    name), so a candidate with external data is written out again under the new name.
    """
    import onnx

    from clip_onnx.export.int8 import has_external_data
    from clip_onnx.export.onnx import save_graph

    graph.with_name(graph.name + ".data").unlink(missing_ok=True)
    if has_external_data(candidate):
        save_graph(onnx.load(candidate), graph)
        _remove_graph(candidate)
    else:
        os.replace(candidate, graph)


def _remove_graph(path: Path) -> None:
    for file in (path, path.with_name(path.name + ".data")):
        file.unlink(missing_ok=True)
