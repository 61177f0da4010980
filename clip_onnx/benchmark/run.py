"""``clip-onnx bench``: eager PyTorch vs ONNX Runtime (fp32, int8) vs TensorRT, in one interleaved run."""
from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from clip_onnx.benchmark.timing import Backend, interleaved
from clip_onnx.bundle import TOWERS, Bundle
from clip_onnx.errors import ClipOnnxError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "torch-fp16", "onnxruntime", "onnxruntime-int8", "tensorrt")
# Rows timing every backend on padded text ids, beside the text each backend runs in practice.
PADDED_TEXT = "textual-padded"
# Suffix of the runtime workers that open only the textual tower.
TEXT_ONLY = ", text only"


def run_benchmark(source: str, out: Path, *, random_weights: bool = False, backends: Sequence[str] = BACKENDS,
                  batches: Sequence[int] = (1, 8, 32), warmup: int = 3, repeat: int = 10,
                  progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Benchmark ``source`` (a model source, exported on the fly) and write JSON/Markdown/PNG into ``out``."""
    import torch

    from clip_onnx.benchmark.accuracy import accuracy
    from clip_onnx.benchmark.pipeline import measure_pipeline
    from clip_onnx.benchmark.report import machine_header, write_reports
    from clip_onnx.export.families import load_model

    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise ClipOnnxError(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    out.mkdir(parents=True, exist_ok=True)
    work = out / "bundles"
    model = load_model(source, random_weights=random_weights)
    bundles = _bundles(model, work)
    feeds, tokens = _feeds(model, batches)
    towers = {"visual": model.visual, "textual": model.textual}
    cut = _cut_text(model)
    if cut:
        # The runtime cuts each text batch to its longest prompt, eager torch runs the padded
        # context as its library does; PADDED_TEXT times the runtimes on the padded ids too.
        feeds[PADDED_TEXT] = feeds["textual"]
        towers[PADDED_TEXT] = model.textual
    chosen, skipped = [], {}
    for name in backends:
        try:
            chosen.append(_make_backend(name, towers, bundles, cut, max(batches)))
        except _Skip as reason:
            skipped[name] = str(reason)
            log.warning("skipping backend %s: %s", name, reason)
    samples = interleaved(chosen, feeds, warmup=warmup, repeat=repeat, on_step=progress)
    pipeline = measure_pipeline(bundles("fp32").path, list(model.sample_texts) or ["кошка"], repeat=repeat)
    stats = [s.stats() for s in samples]
    _add_ratios(stats)
    # Worker processes: each CPU backend with both towers, and the runtime's text-only worker
    # (ClipModel.load(towers=("textual",))), which never loads the visual graph.
    workers = [b.name for b in chosen if b.name in ("torch", "onnxruntime", "onnxruntime-int8")]
    workers += [n + TEXT_ONLY for n in workers if n.startswith("onnxruntime")]
    result = {
        "header": machine_header(torch),
        "source": source, "random_weights": random_weights, "batches": list(batches),
        "warmup": warmup, "repeat": repeat, "skipped": skipped,
        "text_tokens": {"torch": int(tokens["input_ids"].shape[1]),
                        "runtime": {b: int(cut(feeds["textual"][b])["input_ids"].shape[1]) if cut else
                                    int(tokens["input_ids"].shape[1]) for b in batches}},
        "stats": stats,
        "accuracy": accuracy(chosen, feeds, PADDED_TEXT),
        "pipeline": pipeline,
        "cold_start": {name: _subprocess_probe(name, source, random_weights, work, "cold") for name in workers},
        "peak_rss_mb": {name: _subprocess_probe(name, source, random_weights, work, "rss") for name in workers},
        "samples": [{"backend": s.backend, "tower": s.tower, "batch": s.batch, "seconds": s.seconds} for s in samples],
    }
    write_reports(result, out)
    return result


def _bundles(model, work: Path) -> Callable[[str], Bundle]:
    """``get(precision)``: the model's bundle in that precision, exported on first use.

    The int8 bundle is made with the gate off: the benchmark wants the speed of
    both towers quantized, and reports the accuracy it measures beside it.
    """
    from clip_onnx.export.pipeline import export_model

    made = {}

    def get(precision: str):
        if precision not in made:
            made[precision] = export_model(model, work / precision, overwrite=True, precision=precision,
                                           gate=precision != "int8")
        return made[precision]

    get("fp32")
    return get


def _feeds(model, batches: Sequence[int]) -> tuple[dict, dict]:
    """tower -> batch -> feed, on synthetic pictures and the model's sample texts; and the padded text ids."""
    from clip_onnx.runtime.preprocess import ImagePreprocessor
    from clip_onnx.synthetic import synthetic_images

    biggest = max(batches)
    pixels = ImagePreprocessor(model.preprocess)(synthetic_images(biggest, seed=7))
    texts = [model.sample_texts[i % len(model.sample_texts)] + f" {i}" for i in range(biggest)]
    tokens = model.tokenize(texts)
    feeds = {"visual": {b: {"pixel_values": pixels[:b]} for b in batches},
             "textual": {b: {k: v[:b] for k, v in tokens.items()} for b in batches}}
    return feeds, tokens


class _Skip(Exception):
    pass


def _make_backend(name: str, towers: dict, bundles: Callable, cut: Callable | None, max_batch: int) -> Backend:
    import torch

    if name == "torch":
        torch.set_num_threads(torch.get_num_threads())
        return Backend(name, {t: _torch_call(towers[t].module, torch) for t in towers},
                       prepare=lambda tower, feed: _to_torch(feed, towers[tower], torch, "cpu", None))
    if name == "torch-fp16":
        if not torch.cuda.is_available():
            raise _Skip("no CUDA device")
        modules = {t: _half_copy(towers[t].module, torch) for t in TOWERS}
        modules.update({t: modules["textual"] for t in towers if t not in TOWERS})
        return Backend(name, {t: _torch_call(modules[t], torch) for t in towers}, sync=torch.cuda.synchronize,
                       prepare=lambda tower, feed: _to_torch(feed, towers[tower], torch, "cuda", torch.float16))
    if name in ("onnxruntime", "onnxruntime-int8"):
        from clip_onnx.runtime.backends import open_runner

        bundle = bundles("int8" if name.endswith("int8") else "fp32")
        return _runtime_backend(name, {t: open_runner(bundle, t) for t in TOWERS}, cut)
    if name == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            raise _Skip("tensorrt is not installed")
        if not torch.cuda.is_available():
            raise _Skip("no CUDA device")
        return _tensorrt_backend(bundles("fp16").path, max_batch, cut)
    raise _Skip(f"unknown backend {name}")


def _cut_text(model) -> Callable | None:
    """The runtime's cut of a text feed to its longest prompt, where the textual graph allows it."""
    if 1 not in model.textual.dynamic_axes.get("input_ids", {}):
        return None
    from clip_onnx.runtime.tokenizers.base import cut_padding

    pad_id = int(model.tokenizer.get("pad_id", 0))
    return lambda feed: cut_padding(feed, pad_id)


def _runtime_backend(name: str, runners: dict, cut: Callable | None) -> Backend:
    """Runners per tower, fed what ClipModel feeds them: text cut to its longest prompt where the graph allows."""
    run = {t: _runner_call(runners[t]) for t in TOWERS}
    if cut:
        run[PADDED_TEXT] = run["textual"]
    return Backend(name, run, prepare=lambda tower, feed: cut(feed) if cut and tower == "textual" else feed)


def _tensorrt_backend(bundle_path: Path, max_batch: int, cut: Callable | None = None) -> Backend:
    """FP16 plans for the gated fp16 bundle, built (or reused) for this GPU, run by the runtime's TensorRT runner.

    The runner synchronises its stream before returning host arrays, so the clock covers the GPU work.
    """
    from clip_onnx.bundle import read_bundle
    from clip_onnx.engines import Profile
    from clip_onnx.export.tensorrt import build_engines
    from clip_onnx.runtime.backends import open_runner

    build_engines(bundle_path, Profile(1, min(8, max_batch), max_batch))
    bundle = read_bundle(bundle_path)
    return _runtime_backend("tensorrt", {t: open_runner(bundle, t, "tensorrt") for t in TOWERS}, cut)


def _torch_call(module, torch):
    def call(args):
        with torch.inference_mode():
            return module(*args)
    return call


def _runner_call(runner):
    return lambda feed: runner.infer(feed)


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


_PROBES = {
    "torch": """
        import torch
        from clip_onnx.export.families import load_model
        m = load_model({source!r}, random_weights={random_weights!r})
        with torch.inference_mode():
            m.textual.module(*[torch.from_numpy(v) for v in m.tokenize(["кошка"]).values()])
            {extra_torch}
    """,
    "onnxruntime": """
        from clip_onnx.runtime import ClipModel
        m = ClipModel.load({bundle!r}, towers={towers!r})
        m.encode_text(["кошка"])
        {extra_ort}
    """,
}


COLD_RUNS = 3


def _subprocess_probe(backend: str, source: str, random_weights: bool, work: Path, kind: str) -> float:
    """Cold start (s, import + load + first call) or peak RSS (MB, after a batch of 8 per tower), in fresh processes.

    Cold start is the median of COLD_RUNS processes: one start can take ten times
    the usual when the disk or another process gets in the way.
    """
    backend, text_only = backend.removesuffix(TEXT_ONLY), backend.endswith(TEXT_ONLY)
    bundle = work / ("int8" if backend == "onnxruntime-int8" else "fp32")
    rss = kind == "rss"
    extra_torch = ("m.visual.module(torch.randn(8, 3, m.preprocess.image_size, m.preprocess.image_size)); "
                   "m.textual.module(*[torch.from_numpy(v) for v in m.tokenize(['кошка'] * 8).values()])"
                   ) if rss else "pass"
    calls = ["m.encode_text(['кошка'] * 8)"]
    if not text_only:
        calls.insert(0, "import numpy as np; m.encode_image([np.zeros((64, 64, 3), np.uint8)] * 8)")
    extra_ort = "; ".join(calls) if rss else "pass"
    body = textwrap.dedent(_PROBES["torch" if backend == "torch" else "onnxruntime"]).format(
        source=source, random_weights=random_weights, bundle=str(bundle), extra_torch=extra_torch, extra_ort=extra_ort,
        towers=("textual",) if text_only else ("visual", "textual"))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child would
    # report the (larger) benchmark parent's peak.
    script = ("import time; t = time.perf_counter()\n" + body +
              "\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]"
              "\nprint(time.perf_counter() - t, int(hwm) / 1024)")
    readings = []
    for _ in range(1 if rss else COLD_RUNS):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        if done.returncode != 0:
            log.warning("%s %s probe failed: %s", backend, kind, done.stderr[-500:])
            return float("nan")
        seconds, rss_mb = (float(x) for x in done.stdout.split()[-2:])
        readings.append(rss_mb if rss else seconds)
    return float(np.median(readings))
