"""``clip-onnx bench``: eager PyTorch vs ONNX Runtime (fp32, int8) vs TensorRT, in one interleaved run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from clip_onnx.benchmark.backends import (
    DEFAULT_BACKENDS,
    TORCH_BACKENDS,
    BackendUnavailable,
    bundle_backend,
    is_backend,
    parse_runtime,
    torch_backend,
)
from clip_onnx.benchmark.feeds import PADDED_TEXT, model_feeds, text_cut
from clip_onnx.benchmark.timing import Backend, interleaved
from clip_onnx.bundle import Bundle
from clip_onnx.errors import InputError

log = logging.getLogger(__name__)


def run_benchmark(
    source: str | None,
    out: Path,
    *,
    bundles: Sequence[Path] = (),
    random_weights: bool = False,
    backends: Sequence[str] | None = None,
    runtime: str = "onnxruntime",
    batches: Sequence[int] = (1, 8, 32),
    warmup: int = 3,
    repeat: int = 10,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict:
    """Benchmark ``source`` (a model source, exported on the fly) and/or existing ``bundles``, in one run.

    With ``bundles``, each is timed as it is (labelled by its graphs' precision)
    beside the eager backends of ``backends`` (default torch, torch-bf16), which
    need ``source``, and run on the ``runtime`` backend; without, ``backends``
    (default: DEFAULT_BACKENDS) are made from ``source``. Writes JSON/Markdown/PNG into ``out``.
    """
    import torch

    from clip_onnx.benchmark.accuracy import accuracy
    from clip_onnx.benchmark.existing import open_bundles
    from clip_onnx.benchmark.report import machine_header, write_reports

    if source is None and not bundles:
        raise InputError("give a model SOURCE, one or more existing bundles (--bundle PATH), or both")
    backends = _check_backends(backends, source, bundles)
    out.mkdir(parents=True, exist_ok=True)
    existing = open_bundles(bundles, runtime)
    model = _load_source(source, random_weights, existing)
    made = _bundles(model, out / "bundles") if model is not None and not bundles else None
    maker = model_feeds(model) if model is not None else existing.feed_maker()
    feeds, tokens = maker.by_batch(batches)
    cut = text_cut(maker)
    towers = {t: getattr(model, t) for t in feeds} if model is not None else {}
    if cut:
        # The runtime cuts each text batch to its longest prompt, eager torch runs the padded
        # context as its library does; PADDED_TEXT times the runtimes on the padded ids too.
        feeds[PADDED_TEXT] = feeds["textual"]
        if towers:
            towers[PADDED_TEXT] = towers["textual"]
    chosen, skipped = _choose(backends, towers, made, cut, max(batches))
    chosen += existing.backends(cut, max(batches))
    samples = interleaved(chosen, feeds, warmup=warmup, repeat=repeat, on_step=progress)
    stats = [s.stats() for s in samples]
    _add_ratios(stats)
    result = {
        "header": machine_header(torch),
        "source": source or ", ".join(str(p) for p in bundles),
        "random_weights": random_weights,
        "bundles": existing.records(),
        "batches": list(batches),
        "warmup": warmup,
        "repeat": repeat,
        "skipped": skipped,
        "ungated": sorted(_ungated(made, chosen, existing)),
        "stats": stats,
        "accuracy": accuracy(chosen, feeds, PADDED_TEXT),
        "samples": [{"backend": s.backend, "tower": s.tower, "batch": s.batch, "seconds": s.seconds} for s in samples],
    }
    if tokens is not None:
        result["text_tokens"] = {
            "torch": int(tokens["input_ids"].shape[1]),
            "runtime": {
                b: int(cut(feeds["textual"][b])["input_ids"].shape[1]) if cut else int(tokens["input_ids"].shape[1])
                for b in batches
            },
        }
    if made is not None and model.textual is not None:  # the worker probes run a CLIP model's two towers
        from clip_onnx.benchmark.processes import process_figures

        result.update(process_figures(model, source, random_weights, chosen, made, out / "bundles", repeat))
    write_reports(result, out)
    return result


def _check_backends(backends: Sequence[str] | None, source: str | None, bundles: Sequence[Path]) -> list[str]:
    """The backends to build from ``source``: the eager ones beside existing bundles, else any (default: all)."""
    if backends is None:
        backends = (("torch", "torch-bf16") if source else ()) if bundles else DEFAULT_BACKENDS
    unknown = sorted(b for b in backends if not (b in TORCH_BACKENDS if bundles else is_backend(b)))
    if unknown:
        choices = ", ".join(TORCH_BACKENDS if bundles else DEFAULT_BACKENDS)
        beside = " beside --bundle (the bundles' own rows come from --backend)" if bundles else ""
        raise InputError(
            f"unknown backend(s) {unknown}{beside}; choose from {choices}"
            + ("" if bundles else ", or any <runtime backend>-<precision> such as onnxruntime-fp16")
        )
    return list(backends)


def _choose(
    names: Sequence[str], towers: dict, made: Callable | None, cut: Callable | None, max_batch: int
) -> tuple[list[Backend], dict[str, str]]:
    """The backends that can run here, and a note for each one skipped."""
    chosen, skipped = [], {}
    for name in names:
        try:
            if name in TORCH_BACKENDS:
                chosen.append(torch_backend(name, towers))
            else:
                backend, precision = parse_runtime(name)
                chosen.append(bundle_backend(name, made(precision), backend, precision, cut, max_batch))
        except BackendUnavailable as reason:
            skipped[name] = str(reason)
            log.warning("skipping backend %s: %s", name, reason)
    return chosen, skipped


def _load_source(source: str | None, random_weights: bool, existing):
    from clip_onnx.export import load_model

    if source is None:
        return None
    model = load_model(source, random_weights=random_weights)
    existing.check_source(model)
    return model


def _bundles(model, work: Path) -> Callable[[str], Bundle]:
    """``get(precision)``: the model's bundle in that precision, exported on first use.

    The int8 bundle is made with the gate off: the benchmark wants the speed of
    both towers quantized, and reports the accuracy it measures beside it.
    """
    from clip_onnx.export import ExportOptions, GateOptions, export_model

    made = {}

    def get(precision: str):
        if precision not in made:
            gate = GateOptions(enabled=precision != "int8")
            made[precision] = export_model(model, work / precision, ExportOptions(precision, overwrite=True, gate=gate))
        return made[precision]

    get("fp32")
    return get


def _ungated(made: Callable | None, chosen: Sequence[Backend], existing) -> set[str]:
    """The rows whose graphs were lowered without the accuracy gate, so the report can say so plainly."""
    rows = set(existing.ungated())
    for backend in chosen:
        parsed = parse_runtime(backend.name) if made is not None and backend.name not in existing.labels else None
        if parsed and not all(g.gated for g in made(parsed[1]).manifest.graphs.values()):
            rows.add(backend.name)
    return rows


def _add_ratios(stats: list[dict]) -> None:
    """speedup = eager torch fp32 median / backend median, for the same tower and batch in this run."""
    base = {(s["tower"], s["batch"]): s["median_ms"] for s in stats if s["backend"] == "torch"}
    for s in stats:
        ref = base.get((s["tower"], s["batch"]))
        s["speedup_vs_torch"] = ref / s["median_ms"] if ref else None
