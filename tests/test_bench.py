"""Smoke test only: the benchmark runs on a tiny model and writes well-formed output.

Timings are never asserted; benchmarks stay out of pass/fail.
"""
import json

import pytest

from clip_onnx.benchmark.run import run_benchmark


def test_bench_writes_json_markdown_and_plot(tiny_checkpoint, tmp_path):
    pytest.importorskip("matplotlib")
    steps = []
    result = run_benchmark(str(tiny_checkpoint), tmp_path, backends=["torch", "onnxruntime", "onnxruntime-int8",
                                                                     "tensorrt"],
                           batches=[1, 2], warmup=1, repeat=2, progress=lambda *step: steps.append(step))
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["header"]["cores"] >= 1 and data["header"]["versions"]["onnxruntime"]
    assert "tensorrt" in data["skipped"]
    rows = {(s["backend"], s["tower"], s["batch"]) for s in data["stats"]}
    # The tiny RuCLIP text graph has a symbolic sequence axis, so each backend is also timed on padded ids.
    assert rows == {(b, t, n) for b in ("torch", "onnxruntime", "onnxruntime-int8")
                    for t in ("visual", "textual", "textual-padded") for n in (1, 2)}
    assert data["text_tokens"]["torch"] == 77
    assert all(0 < n < 77 for n in data["text_tokens"]["runtime"].values())
    assert all(len(s["seconds"]) == 2 for s in data["samples"])
    # One step per round of all backends: 3 towers x 2 batches x (1 warm-up + 2 repeats).
    assert steps == [(i, 18) for i in range(1, 19)]
    assert all(s["speedup_vs_torch"] > 0 for s in data["stats"])
    assert data["accuracy"]["onnxruntime"]["visual"]["min_cosine"] > 0.99999
    assert set(data["cold_start"]) == set(data["peak_rss_mb"]) == {
        "torch", "onnxruntime", "onnxruntime-int8", "onnxruntime, text only", "onnxruntime-int8, text only"}
    assert all(v > 0 for v in data["peak_rss_mb"].values()) and all(v > 0 for v in data["cold_start"].values())
    pipeline = data["pipeline"]
    assert all(pipeline[k] > 0 for k in ("preprocess_images_per_s", "decode_preprocess_images_per_s",
                                         "tokenize_prompts_per_s_unique", "tokenize_prompts_per_s_repeated"))
    assert set(pipeline["end_to_end_ms"]) == {"image_jpeg_batch1", "image_jpeg_batch8", "text_batch1", "text_batch8"}
    assert "| visual | 1 | onnxruntime |" in (tmp_path / "bench.md").read_text()
    assert "| tokenize, repeated prompts (LRU cache) |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert result["stats"] == data["stats"]
