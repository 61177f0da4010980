"""export_bundle: source -> ONNX graphs -> parity gate -> bundle on disk."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import torch

from clip_onnx import __version__
from clip_onnx.bundle import Bundle, BundleWriter
from clip_onnx.export import validate
from clip_onnx.export.families import load_model
from clip_onnx.errors import ExportError
from clip_onnx.export.families.base import ExportableModel
from clip_onnx.export.fp16 import FP16_LADDER, fp16_converter
from clip_onnx.export.int8 import quantize_int8
from clip_onnx.export.onnx import DEFAULT_OPSET, EXAMPLE_BATCH, export_tower
from clip_onnx.export.precision import lower
from clip_onnx.runtime.backends.onnxruntime import OnnxRuntimeRunner

log = logging.getLogger(__name__)

GRAPH_FILES = {"visual": "visual.onnx", "textual": "textual.onnx"}


# precision -> (converters from most to least aggressive, gate thresholds)
PRECISIONS = {
    "fp32": ((), validate.FP32),
    "int8": ((quantize_int8,), validate.INT8),
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
    with BundleWriter(out, overwrite=overwrite) as writer:
        feeds = validate.validation_inputs(model)
        for tower in (model.visual, model.textual):
            progress(f"export {tower.name}")
            # Traced at a batch size the parity gate never uses, so a frozen axis cannot pass.
            example = {k: torch.from_numpy(v[:EXAMPLE_BATCH].copy()) for k, v in feeds[tower.name][-1].items()}
            export_tower(tower, example, writer.dir / GRAPH_FILES[tower.name], opset=opset)
        parity = None
        if check_parity:
            progress("check parity")
            parity = run_parity(model, writer.dir, feeds)
        else:
            log.warning("parity check skipped (--no-validate): the bundle is unverified")
        lowered = None
        if precision != "fp32":
            progress(f"{precision} gate")
            graphs = {t: writer.dir / GRAPH_FILES[t] for t in GRAPH_FILES}
            converters, thresholds = PRECISIONS[precision]
            lowered = lower(model, graphs, precision, converters, thresholds, gate_images)
        for name, path in model.tokenizer_files.items():
            writer.add_file(name, path)
        progress("write bundle")
        bundle = writer.commit(build_manifest(model, opset, parity, lowered, time.perf_counter() - started))
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


def build_manifest(model: ExportableModel, opset: int, parity, lowered, seconds: float) -> dict:
    graphs = {}
    for tower in (model.visual, model.textual):
        graphs[tower.name] = {
            "file": GRAPH_FILES[tower.name], "inputs": list(tower.input_names), "output": tower.output_name,
            "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in tower.dynamic_axes.items()},
            "opset": opset, **(lowered["towers"][tower.name] if lowered else {"precision": "fp32"}),
        }
    return {
        "kind": "clip",
        "model": {"name": model.name, "family": model.family, "source": model.source, "config": dict(model.config)},
        "logit_scale": model.logit_scale,
        "embed_dim": model.embed_dim,
        "preprocess": model.preprocess.to_dict(),
        "tokenizer": dict(model.tokenizer),
        "graphs": graphs,
        "parity": ([parity.to_dict()] if parity else []) + (lowered["gate"] if lowered else []),
        "export": {"clip_onnx": __version__, "torch": torch.__version__, "seconds": round(seconds, 1)},
    }
