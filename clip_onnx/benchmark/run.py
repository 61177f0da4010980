"""``clip-onnx bench``: eager PyTorch vs ONNX Runtime (fp32, int8) vs TensorRT, in one interleaved run."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from clip_onnx.benchmark.feeds import PADDED_TEXT, make_feeds, runtime_backend
from clip_onnx.benchmark.report import BF16_FLAGS
from clip_onnx.benchmark.timing import Backend, interleaved
from clip_onnx.bundle import TOWERS, Bundle
from clip_onnx.errors import InputError
from clip_onnx.machine import cpu_flags

log = logging.getLogger(__name__)

BACKENDS = ("torch", "torch-bf16", "torch-fp16", "onnxruntime", "onnxruntime-int8", "tensorrt")
# Eager backends, the only ones made beside existing bundles (--bundle): the graphs are the bundles'.
TORCH_BACKENDS = ("torch", "torch-bf16", "torch-fp16")
# Suffix of the runtime workers that open only the textual tower.


def run_benchmark(
    source: str | None,
    out: Path,
    *,
    bundles: Sequence[Path] = (),
    random_weights: bool = False,
    backends: Sequence[str] | None = None,
    batches: Sequence[int] = (1, 8, 32),
    warmup: int = 3,
    repeat: int = 10,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict:
    """Benchmark ``source`` (a model source, exported on the fly) and/or existing ``bundles``, in one run.

    With ``bundles``, each is timed as it is (labelled by its graphs' precision)
    beside the eager backends of ``backends`` (default torch, torch-bf16), which
    need ``source``; without, ``backends`` (default: all) are made from ``source``.
    Writes JSON/Markdown/PNG into ``out``.
    """
    import torch

    from clip_onnx.benchmark.accuracy import accuracy
    from clip_onnx.benchmark.existing import open_bundles
    from clip_onnx.benchmark.report import machine_header, write_reports

    if source is None and not bundles:
        raise InputError("give a model SOURCE, one or more existing bundles (--bundle PATH), or both")
    backends = _check_backends(backends, source, bundles)
    out.mkdir(parents=True, exist_ok=True)
    existing = open_bundles(bundles)
    model = _load_source(source, random_weights, existing)
    made = _bundles(model, out / "bundles") if model is not None and not bundles else None
    feeds, tokens, cut = (
        (_feeds(model, batches) + (_cut_text(model),)) if model is not None else existing.feeds(batches)
    )
    towers = {t: getattr(model, t) for t in feeds} if model is not None else {}
    if cut:
        # The runtime cuts each text batch to its longest prompt, eager torch runs the padded
        # context as its library does; PADDED_TEXT times the runtimes on the padded ids too.
        feeds[PADDED_TEXT] = feeds["textual"]
        if towers:
            towers[PADDED_TEXT] = towers["textual"]
    chosen, skipped = _choose(backends, towers, made, cut, max(batches))
    chosen += existing.backends(cut)
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
    allowed = TORCH_BACKENDS if bundles else BACKENDS
    if backends is None:
        backends = (("torch", "torch-bf16") if source else ()) if bundles else BACKENDS
    unknown = sorted(set(backends) - set(allowed))
    if unknown:
        beside = "beside --bundle " if bundles else ""
        raise InputError(f"unknown backend(s) {unknown} {beside}; choose from {', '.join(allowed)}")
    return list(backends)


def _choose(
    names: Sequence[str], towers: dict, made: Callable | None, cut: Callable | None, max_batch: int
) -> tuple[list[Backend], dict[str, str]]:
    """The backends that can run here, and a note for each one skipped."""
    chosen, skipped = [], {}
    for name in names:
        try:
            chosen.append(_make_backend(name, towers, made, cut, max_batch))
        except _Skip as reason:
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
    from clip_onnx.export import export_model

    made = {}

    def get(precision: str):
        if precision not in made:
            made[precision] = export_model(
                model, work / precision, overwrite=True, precision=precision, gate=precision != "int8"
            )
        return made[precision]

    get("fp32")
    return get


def _feeds(model, batches: Sequence[int]) -> tuple[dict, dict | None]:
    return make_feeds(
        model.preprocess, model.tokenize if model.textual is not None else None, model.sample_texts, batches
    )


class _Skip(Exception):
    pass


def _make_backend(name: str, towers: dict, bundles: Callable, cut: Callable | None, max_batch: int) -> Backend:
    import torch

    if name in TORCH_BACKENDS and not towers:
        raise _Skip("eager backends need the model SOURCE beside --bundle")
    if name == "torch":
        # CLIP_ONNX_THREADS sizes ONNX Runtime's pools; eager torch gets as many, so the ratio compares like with
        # like.  On a shared machine one thread each is the steady figure: a busy core stalls a 2-thread OpenMP
        # region at every barrier (benchmarks/NOTES.md, "int8 on CPU").
        threads = int(os.environ.get("CLIP_ONNX_THREADS", "0"))
        torch.set_num_threads(threads or torch.get_num_threads())
        return Backend(
            name,
            {t: _torch_call(towers[t].module, torch) for t in towers},
            prepare=lambda tower, feed: _to_torch(feed, towers[tower], torch, "cpu", None),
        )
    if name == "torch-bf16":
        return torch_bf16_backend(towers, cpu_flags())
    if name == "torch-fp16":
        if not torch.cuda.is_available():
            raise _Skip("no CUDA device")
        modules = {t: _half_copy(towers[t].module, torch) for t in TOWERS if t in towers}
        modules.update({t: modules["textual"] for t in towers if t not in TOWERS})
        return Backend(
            name,
            {t: _torch_call(modules[t], torch) for t in towers},
            sync=torch.cuda.synchronize,
            gate="fp16",
            prepare=lambda tower, feed: _to_torch(feed, towers[tower], torch, "cuda", torch.float16),
        )
    if name in ("onnxruntime", "onnxruntime-int8"):
        from clip_onnx.runtime import open_runner

        precision = "int8" if name.endswith("int8") else "fp32"
        return runtime_backend(name, _runners(bundles(precision), open_runner), cut, precision)
    if name == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            raise _Skip("tensorrt is not installed")
        if not torch.cuda.is_available():
            raise _Skip("no CUDA device")
        return _tensorrt_backend(bundles("fp16").path, max_batch, cut)
    raise _Skip(f"unknown backend {name}")


def torch_bf16_backend(towers: dict, flags: set[str]) -> Backend:
    """Eager torch under ``torch.autocast("cpu", dtype=torch.bfloat16)``: what a CPU user with bf16 would try.

    Skipped without native bf16 (AVX512-BF16 or AMX): torch then emulates it, far slower than fp32.
    """
    import torch

    native = sorted(flags & set(BF16_FLAGS))
    if not native:
        raise _Skip(f"this CPU has no native bf16 ({' or '.join(BF16_FLAGS)} flag in /proc/cpuinfo)")
    return Backend(
        "torch-bf16",
        {t: _torch_call(towers[t].module, torch, bf16=True) for t in towers},
        gate=None,
        prepare=lambda tower, feed: _to_torch(feed, towers[tower], torch, "cpu", None),
    )


def _cut_text(model) -> Callable | None:
    """The runtime's cut of a text feed to its longest prompt, where the textual graph allows it."""
    if model.textual is None or 1 not in model.textual.dynamic_axes.get("input_ids", {}):
        return None
    from clip_onnx.runtime import cut_padding

    pad_id = int(model.tokenizer.get("pad_id", 0))
    return lambda feed: cut_padding(feed, pad_id)


def _tensorrt_backend(bundle_path: Path, max_batch: int, cut: Callable | None = None) -> Backend:
    """FP16 plans for the gated fp16 bundle, built (or reused) for this GPU, run by the runtime's TensorRT runner.

    The runner synchronises its stream before returning host arrays, so the clock covers the GPU work.
    """
    from clip_onnx.bundle import read_bundle
    from clip_onnx.engines import Profile
    from clip_onnx.export import build_engines
    from clip_onnx.runtime import open_runner

    build_engines(bundle_path, Profile(1, min(8, max_batch), max_batch))
    bundle = read_bundle(bundle_path)
    return runtime_backend("tensorrt", _runners(bundle, open_runner, "tensorrt"), cut, "fp16")


def _runners(bundle: Bundle, open_runner: Callable, *backend: str) -> dict:
    """One runner per tower the bundle has: both for CLIP, the visual one for a classifier."""
    return {t: open_runner(bundle, t, *backend) for t in TOWERS if t in bundle.manifest.graphs}


def _torch_call(module, torch, bf16: bool = False):
    def call(args):
        with torch.inference_mode():
            if not bf16:
                return module(*args)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(*args)

    return call


def _to_torch(feed, tower, torch, device, dtype):
    args = [torch.from_numpy(feed[n]).to(device) for n in tower.input_names]
    return [a.to(dtype) if dtype is not None and a.is_floating_point() else a for a in args]


def _half_copy(module, torch):
    import copy

    return copy.deepcopy(module).to("cuda", torch.float16).eval()


def _add_ratios(stats: list[dict]) -> None:
    """speedup = eager torch fp32 median / backend median, for the same tower and batch in this run."""
    base = {(s["tower"], s["batch"]): s["median_ms"] for s in stats if s["backend"] == "torch"}
    for s in stats:
        ref = base.get((s["tower"], s["batch"]))
        s["speedup_vs_torch"] = ref / s["median_ms"] if ref else None
