"""export_bundle: source -> ONNX graphs -> parity gate -> (lowered graphs) -> bundle on disk.

This module only orchestrates: ``validate`` makes the gates' inputs and each
stage's outputs, ``clip_onnx.parity`` compares them, ``precision`` lowers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from clip_onnx import __version__, machine
from clip_onnx.bundle import Bundle, BundleWriter
from clip_onnx.export import validate
from clip_onnx.export.families import load_model
from clip_onnx.export.families.base import ExportableModel
from clip_onnx.export.gate_data import plan_gate
from clip_onnx.export.onnx import EXAMPLE_BATCH, export_tower, graph_opset
from clip_onnx.export.options import ExportOptions
from clip_onnx.export.precision import lower
from clip_onnx.export.self_test import replay_self_test, write_self_test
from clip_onnx.manifest import GraphSpec, LabelsSpec, Manifest, ModelInfo, ModelKind, TokenizerSpec
from clip_onnx.parity import THRESHOLDS, ParityReport, compare

log = logging.getLogger(__name__)

GRAPH_FILES = {"visual": "visual.onnx", "textual": "textual.onnx"}
# A classifier bundle's class names, one a line, in logit order.
LABELS_FILE = "labels.txt"


def export_bundle(
    source: str,
    out,
    options: ExportOptions | None = None,
    *,
    progress: Callable[[str], None] = lambda step: None,
    **keywords: Any,
) -> Bundle:
    """Export ``source`` into a bundle at ``out``; raises ParityError if the graphs don't match eager torch.

    ``options`` (an ``ExportOptions``) says what to do; with ``precision="int8"``
    or ``"fp16"`` each tower whose converted graph passes that precision's gate
    against the fp32 graphs is lowered, the others stay fp32 (``GateOptions``:
    the gate's pictures, prompts and thresholds, or the gate off). The keywords
    of clip-onnx 0.1 (``precision="int8", gate_images=..., min_cosine=...``) still
    work in place of ``options``.
    """
    started = time.perf_counter()
    # Checked before loading: a model can take minutes to load.
    options = _options(options, keywords)
    progress("load model")
    model = load_model(source, random_weights=options.random_weights)
    return export_model(model, out, options, progress=progress, started=started)


def export_model(
    model: ExportableModel,
    out,
    options: ExportOptions | None = None,
    *,
    progress: Callable[[str], None] = lambda step: None,
    started: float | None = None,
    **keywords: Any,
) -> Bundle:
    """Export an already loaded model; see export_bundle."""
    options = _options(options, keywords)
    started = time.perf_counter() if started is None else started
    precision, check_parity = options.precision, options.check_parity
    # Read before the export, so a bad folder or threshold fails in seconds.
    plan = plan_gate(model, precision, options.gate) if options.gated else None
    with BundleWriter(out, overwrite=options.overwrite) as writer:
        feeds = validate.parity_inputs(model)
        graphs = _export_graphs(model, writer, feeds, options.opset, progress)
        parity = None
        if check_parity:
            progress("check parity")
            parity = compare(
                "onnx-fp32",
                validate.eager_outputs(model, feeds),
                validate.graph_outputs(model, graphs, feeds),
                THRESHOLDS["fp32"],
                validate.task_of(model),
                feeds=feeds,
            )
        else:
            log.warning("parity check skipped (--no-validate): the bundle is unverified")
        lowered = None
        if precision != "fp32":
            progress(f"{precision} gate" if options.gated else f"{precision} (ungated)")
            lowered = lower(model, graphs, precision, plan, gate=options.gated)
        progress("self-test")
        manifest = _write_rest(model, writer, parity, lowered, started)
        if check_parity:
            manifest = replay_self_test(writer, manifest)
        progress("write bundle")
        bundle = writer.commit(manifest)
    return bundle


def _options(options: ExportOptions | None, keywords: dict[str, Any]) -> ExportOptions:
    if options is not None and keywords:
        raise TypeError(f"give ExportOptions or the keywords {sorted(keywords)}, not both")
    return options if options is not None else ExportOptions.from_keywords(**keywords)


def _export_graphs(
    model: ExportableModel, writer: BundleWriter, feeds: dict, opset: int, progress: Callable[[str], None]
) -> dict[str, Path]:
    graphs = {}
    for tower in validate.towers_of(model):
        progress(f"export {tower.name}")
        # Traced at a batch size the parity gate never uses, so a frozen axis cannot pass.
        graphs[tower.name] = export_tower(
            tower,
            validate.trace_example(feeds, tower.name, EXAMPLE_BATCH),
            writer.dir / GRAPH_FILES[tower.name],
            opset=opset,
        )
    return graphs


def _write_rest(
    model: ExportableModel, writer: BundleWriter, parity: ParityReport | None, lowered: dict | None, started: float
) -> Manifest:
    """The tokenizer, labels and self-test files beside the graphs; returns the manifest describing them all."""
    for name, path in model.tokenizer_files.items():
        writer.add_file(name, path)
    if model.labels is not None:
        (writer.dir / LABELS_FILE).write_text("".join(f"{label}\n" for label in model.labels), encoding="utf-8")
    self_test = write_self_test(model, writer.dir)
    # The opset each graph really carries, after any lowering, not the one asked for.
    opsets = {t.name: graph_opset(writer.dir / GRAPH_FILES[t.name]) for t in validate.towers_of(model)}
    manifest = build_manifest(model, opsets, parity, lowered, time.perf_counter() - started)
    gated = parity is not None or bool(lowered and lowered["gate"])
    return replace(manifest, self_test=self_test, gate_machine=machine.describe() if gated else None)


def build_manifest(
    model: ExportableModel, opsets: dict[str, int], parity: ParityReport | None, lowered: dict | None, seconds: float
) -> Manifest:
    graphs = {}
    for tower in validate.towers_of(model):
        record = dict(lowered["towers"][tower.name]) if lowered else {"precision": "fp32"}
        graphs[tower.name] = GraphSpec(
            file=GRAPH_FILES[tower.name],
            inputs=tuple(tower.input_names),
            output=tower.output_name,
            dynamic_axes=tower.dynamic_axes,
            opset=opsets[tower.name],
            precision=record.pop("precision"),
            lowering=record,
        )
    clip = model.kind == ModelKind.CLIP
    return Manifest(
        kind=ModelKind(model.kind),
        model=ModelInfo(model.name, model.family, model.source, model.config),
        graphs=graphs,
        preprocess=model.preprocess,
        logit_scale=model.logit_scale if clip else None,
        embed_dim=model.embed_dim if clip else None,
        tokenizer=TokenizerSpec(model.tokenizer["kind"], model.tokenizer["file"], model.tokenizer) if clip else None,
        # The gate's prompts, so `build-engine` can gate a plan from the bundle alone.
        sample_texts=tuple(model.sample_texts) if clip else (),
        templates=tuple(model.templates) if model.templates is not None else None,
        labels=None if clip else LabelsSpec(LABELS_FILE, len(model.labels)),
        parity=([parity.to_dict()] if parity else []) + (lowered["gate"] if lowered else []),
        # What the fp16/int8 gate ran on, and its thresholds.
        gate_inputs=lowered["inputs"] if lowered and lowered.get("inputs") else None,
        export={"clip_onnx": __version__, "torch": torch.__version__, "seconds": round(seconds, 1)},
    )
