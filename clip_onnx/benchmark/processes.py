"""Worker processes as a deployment sees them: cold start (import, load, first call) and peak RSS.

Each figure comes from fresh interpreters, so nothing the benchmark itself
imported or allocated counts.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TEXT_ONLY = ", text only"


def process_figures(
    model, source: str, random_weights: bool, chosen: list, made: Callable, work: Path, repeat: int
) -> dict:
    """The end-to-end pipeline, and each worker process's cold start and peak RSS, for exported bundles."""
    from clip_onnx.benchmark.pipeline import measure_pipeline

    # Worker processes: each CPU backend with both towers, and the runtime's text-only worker
    # (ClipModel.load(towers=("textual",))), which never loads the visual graph.
    workers = [b.name for b in chosen if b.name in ("torch", "onnxruntime", "onnxruntime-int8")]
    workers += [n + TEXT_ONLY for n in workers if n.startswith("onnxruntime")]
    return {
        "pipeline": measure_pipeline(made("fp32").path, list(model.sample_texts) or ["кошка"], repeat=repeat),
        "cold_start": {name: _subprocess_probe(name, source, random_weights, work, "cold") for name in workers},
        "peak_rss_mb": {name: _subprocess_probe(name, source, random_weights, work, "rss") for name in workers},
    }


_PROBES = {
    "torch": """
        import torch
        from clip_onnx.export import load_model
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
    extra_torch = (
        (
            "m.visual.module(torch.randn(8, 3, m.preprocess.image_size, m.preprocess.image_size)); "
            "m.textual.module(*[torch.from_numpy(v) for v in m.tokenize(['кошка'] * 8).values()])"
        )
        if rss
        else "pass"
    )
    calls = ["m.encode_text(['кошка'] * 8)"]
    if not text_only:
        calls.insert(0, "import numpy as np; m.encode_image([np.zeros((64, 64, 3), np.uint8)] * 8)")
    extra_ort = "; ".join(calls) if rss else "pass"
    body = textwrap.dedent(_PROBES["torch" if backend == "torch" else "onnxruntime"]).format(
        source=source,
        random_weights=random_weights,
        bundle=str(bundle),
        extra_torch=extra_torch,
        extra_ort=extra_ort,
        towers=("textual",) if text_only else ("visual", "textual"),
    )
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child would
    # report the (larger) benchmark parent's peak.
    script = (
        "import time; t = time.perf_counter()\n"
        + body
        + "\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]"
        "\nprint(time.perf_counter() - t, int(hwm) / 1024)"
    )
    readings = []
    for _ in range(1 if rss else COLD_RUNS):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        if done.returncode != 0:
            log.warning("%s %s probe failed: %s", backend, kind, done.stderr[-500:])
            return float("nan")
        seconds, rss_mb = (float(x) for x in done.stdout.split()[-2:])
        readings.append(rss_mb if rss else seconds)
    return float(np.median(readings))
