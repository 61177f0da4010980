"""export_bundle: source -> ONNX graphs -> parity gate -> bundle on disk."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from clip_onnx import __version__
from clip_onnx.bundle import Bundle, BundleWriter
from clip_onnx.export import validate
from clip_onnx.export.families import load_model
from clip_onnx.errors import ExportError
from clip_onnx.export.families.base import ExportableModel
from clip_onnx.export.fp16 import FP16_LADDER, fp16_converter
from clip_onnx.export.int8 import INT8_LADDER
from clip_onnx.export.onnx import DEFAULT_OPSET, EXAMPLE_BATCH, check_opset, export_tower, graph_opset
from clip_onnx.export.precision import lower, run_graph
from clip_onnx.runtime.backends.onnxruntime import OnnxRuntimeRunner
from clip_onnx.runtime.preprocess import ImagePreprocessor
from clip_onnx.runtime.tokenizers.base import cut_padding

log = logging.getLogger(__name__)

GRAPH_FILES = {"visual": "visual.onnx", "textual": "textual.onnx"}
# A classifier bundle's class names, one a line, in logit order.
LABELS_FILE = "labels.txt"


# precision -> (converters from most to least aggressive, gate thresholds)
PRECISIONS = {
    "fp32": ((), validate.FP32),
    "int8": (INT8_LADDER, validate.INT8),
    "fp16": (tuple(fp16_converter(block) for block in FP16_LADDER), validate.FP16),
}


def export_bundle(source: str, out, *, random_weights: bool = False, opset: int = DEFAULT_OPSET,
                  check_parity: bool = True, overwrite: bool = False, precision: str = "fp32",
                  gate_images: int = validate.GATE_IMAGES,
                  progress: Callable[[str], None] = lambda step: None) -> Bundle:
    """Export ``source`` into a bundle at ``out``; raises ParityError if the graphs don't match eager torch.

    ``precision="int8"`` or ``"fp16"`` then lowers each tower whose converted
    graph passes that precision's gate against the fp32 graphs; the others stay fp32.
    """
    started = time.perf_counter()
    check_opset(opset)  # before loading: a model can take minutes to load
    progress("load model")
    model = load_model(source, random_weights=random_weights)
    return export_model(model, out, opset=opset, check_parity=check_parity, overwrite=overwrite,
                        precision=precision, gate_images=gate_images, progress=progress, started=started)


def export_model(model: ExportableModel, out, *, opset: int = DEFAULT_OPSET, check_parity: bool = True,
                 overwrite: bool = False, precision: str = "fp32", gate_images: int = validate.GATE_IMAGES,
                 progress: Callable[[str], None] = lambda step: None, started: float | None = None) -> Bundle:
    """Export an already loaded model; see export_bundle."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    started = time.perf_counter() if started is None else started
    classifier = model.kind == "classifier"
    with BundleWriter(out, overwrite=overwrite) as writer:
        feeds = classifier_inputs(model) if classifier else validate.validation_inputs(model)
        for tower in towers_of(model):
            progress(f"export {tower.name}")
            # Traced at a batch size the parity gate never uses, so a frozen axis cannot pass.
            example = {k: torch.from_numpy(v[:EXAMPLE_BATCH].copy()) for k, v in feeds[tower.name][-1].items()}
            export_tower(tower, example, writer.dir / GRAPH_FILES[tower.name], opset=opset)
        parity = None
        if check_parity:
            progress("check parity")
            if classifier:
                parity = run_classifier_parity(model, writer.dir, feeds)
            else:
                parity = run_parity(model, writer.dir, with_trimmed_text(model, feeds))
        else:
            log.warning("parity check skipped (--no-validate): the bundle is unverified")
        lowered = None
        if precision != "fp32":
            progress(f"{precision} gate")
            converters, thresholds = PRECISIONS[precision]
            if classifier:
                lowered = lower_classifier(model, writer.dir / GRAPH_FILES["visual"], precision, converters,
                                           thresholds, gate_images)
            else:
                graphs = {t: writer.dir / GRAPH_FILES[t] for t in GRAPH_FILES}
                lowered = lower(model, graphs, precision, converters, thresholds, gate_images)
        for name, path in model.tokenizer_files.items():
            writer.add_file(name, path)
        if model.labels is not None:
            (writer.dir / LABELS_FILE).write_text("".join(f"{label}\n" for label in model.labels), encoding="utf-8")
        progress("write bundle")
        # The opset each graph really carries, after any lowering, not the one asked for.
        opsets = {t.name: graph_opset(writer.dir / GRAPH_FILES[t.name]) for t in towers_of(model)}
        bundle = writer.commit(build_manifest(model, opsets, parity, lowered, time.perf_counter() - started))
    return bundle


def run_parity(model: ExportableModel, directory: Path, feeds) -> validate.ParityReport:
    towers = {"visual": model.visual, "textual": model.textual}
    reference = {name: validate.eager_outputs(towers[name], feeds[name]) for name in towers}
    runners = {name: OnnxRuntimeRunner(directory / GRAPH_FILES[name]) for name in towers}
    report = validate.compare("onnx-fp32", model, feeds, reference,
                              lambda tower, feed: runners[tower].infer(feed)[towers[tower].output_name],
                              validate.FP32)
    validate.check(report)
    return report


def towers_of(model: ExportableModel) -> tuple:
    return (model.visual,) if model.textual is None else (model.visual, model.textual)


def with_trimmed_text(model: ExportableModel, feeds):
    """Add each text batch cut to its longest prompt when the graph's sequence axis is symbolic.

    ClipModel sends such trimmed batches, so the gate checks those sequence
    lengths as well as the padded one.
    """
    if 1 not in model.textual.dynamic_axes.get("input_ids", {}):
        return feeds
    pad_id = model.tokenizer.get("pad_id", 0)
    return {**feeds, "textual": list(feeds["textual"]) + [cut_padding(f, pad_id) for f in feeds["textual"]]}


def classifier_inputs(model: ExportableModel, seed: int = 0) -> dict:
    pixels = ImagePreprocessor(model.preprocess)(validate.synthetic_images(max(validate.VALIDATION_BATCHES), seed))
    return {"visual": [{"pixel_values": pixels[:b]} for b in validate.VALIDATION_BATCHES]}


def classifier_report(stage: str, reference, got, thresholds: validate.Thresholds) -> validate.ParityReport:
    """One row per batch of logits; top-1 agreement is over the last batch's argmax."""
    rows = [validate.ParityRow(stage, "visual", len(r), float(np.abs(r - g).max()), validate.min_cosine([r], [g]))
            for r, g in zip(reference, got)]
    agreement = float((reference[-1].argmax(axis=1) == got[-1].argmax(axis=1)).mean())
    return validate.ParityReport(stage, rows, agreement, len(reference[-1]), thresholds)


def run_classifier_parity(model: ExportableModel, directory: Path, feeds) -> validate.ParityReport:
    reference = validate.eager_outputs(model.visual, feeds["visual"])
    got = run_graph(directory / GRAPH_FILES["visual"], model.visual.output_name, feeds["visual"])
    report = classifier_report("onnx-fp32", reference, got, validate.FP32)
    validate.check(report)
    return report


def lower_classifier(model: ExportableModel, graph: Path, precision: str, converters, thresholds,
                     gate_images: int) -> dict:
    """Lower the classifier graph with the first converter whose logits pass ``thresholds`` on ``gate_images`` images.

    Returns the same record as ``precision.lower``; the graph stays fp32 if no converter passes.
    """
    preprocess = ImagePreprocessor(model.preprocess)
    feeds = [{"pixel_values": preprocess(validate.synthetic_images(min(16, gate_images - start), 1 + start))}
             for start in range(0, gate_images, 16)]
    output = model.visual.output_name
    reference = np.concatenate(run_graph(graph, output, feeds))
    candidate = graph.with_name(f"{graph.stem}.{precision}.onnx")
    tried, report, details = [], None, {}
    for convert in converters:
        details = convert(graph, candidate)
        report = classifier_report(f"onnx-{precision}[visual]", [reference],
                                   [np.concatenate(run_graph(candidate, output, feeds))], thresholds)
        tried.append({**details, "min_cosine": report.rows[0].min_cosine, "top1_agreement": report.top1_agreement})
        log.info("%s classifier gate with %s: %s", precision, details, report.failures() or "pass")
        if not report.failures():
            os.replace(candidate, graph)
            return {"precision": precision, "gate": [report.to_dict()], "tried": {"visual": tried},
                    "towers": {"visual": {"precision": precision, **details}}}
    for file in (candidate, candidate.with_name(candidate.name + ".data")):
        file.unlink(missing_ok=True)
    return {"precision": precision, "gate": [report.to_dict()], "tried": {"visual": tried},
            "towers": {"visual": {"precision": "fp32", "reason": f"{precision} missed the gate; see 'gate'"}}}


def build_manifest(model: ExportableModel, opsets: dict[str, int], parity, lowered, seconds: float) -> dict:
    graphs = {}
    for tower in towers_of(model):
        graphs[tower.name] = {
            "file": GRAPH_FILES[tower.name], "inputs": list(tower.input_names), "output": tower.output_name,
            "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in tower.dynamic_axes.items()},
            "opset": opsets[tower.name], **(lowered["towers"][tower.name] if lowered else {"precision": "fp32"}),
        }
    manifest = {
        "kind": model.kind,
        "model": {"name": model.name, "family": model.family, "source": model.source, "config": dict(model.config)},
        "logit_scale": model.logit_scale,
        "embed_dim": model.embed_dim,
        "preprocess": model.preprocess.to_dict(),
        "tokenizer": dict(model.tokenizer),
        "graphs": graphs,
        "parity": ([parity.to_dict()] if parity else []) + (lowered["gate"] if lowered else []),
        "export": {"clip_onnx": __version__, "torch": torch.__version__, "seconds": round(seconds, 1)},
    }
    if model.templates is not None:
        manifest["templates"] = list(model.templates)
    if model.kind == "classifier":
        for key in ("logit_scale", "embed_dim", "tokenizer"):
            del manifest[key]
        manifest["labels"] = {"file": LABELS_FILE, "count": len(model.labels)}
    return manifest
