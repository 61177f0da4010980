"""Smoke test only: the benchmark runs on a tiny model and writes well-formed output.

Timings are never asserted; benchmarks stay out of pass/fail.
"""

import json
import shutil

import pytest

from clip_onnx.benchmark.run import run_benchmark


def test_bench_writes_json_markdown_and_plot(tiny_checkpoint, tmp_path):
    import matplotlib  # noqa: F401  (the bench extra draws the plot)

    steps = []
    result = run_benchmark(
        str(tiny_checkpoint),
        tmp_path,
        backends=["torch", "onnxruntime", "onnxruntime-int8", "tensorrt"],
        batches=[1, 2],
        warmup=1,
        repeat=2,
        progress=lambda *step: steps.append(step),
    )
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["header"]["cores"] >= 1 and data["header"]["versions"]["onnxruntime"]
    assert "tensorrt" in data["skipped"]
    rows = {(s["backend"], s["tower"], s["batch"]) for s in data["stats"]}
    # The tiny RuCLIP text graph has a symbolic sequence axis, so each backend is also timed on padded ids.
    assert rows == {
        (b, t, n)
        for b in ("torch", "onnxruntime", "onnxruntime-int8")
        for t in ("visual", "textual", "textual-padded")
        for n in (1, 2)
    }
    assert data["text_tokens"]["torch"] == 77
    assert all(0 < n < 77 for n in data["text_tokens"]["runtime"].values())
    assert all(len(s["seconds"]) == 2 for s in data["samples"])
    # One step per round of all backends: 3 towers x 2 batches x (1 warm-up + 2 repeats).
    assert steps == [(i, 18) for i in range(1, 19)]
    assert all(s["speedup_vs_torch"] > 0 for s in data["stats"])
    assert data["accuracy"]["onnxruntime"]["visual"]["min_cosine"] > 0.99999
    assert (
        set(data["cold_start"])
        == set(data["peak_rss_mb"])
        == {"torch", "onnxruntime", "onnxruntime-int8", "onnxruntime, text only", "onnxruntime-int8, text only"}
    )
    assert all(v > 0 for v in data["peak_rss_mb"].values()) and all(v > 0 for v in data["cold_start"].values())
    pipeline = data["pipeline"]
    assert all(
        pipeline[k] > 0
        for k in (
            "preprocess_images_per_s",
            "decode_preprocess_images_per_s",
            "tokenize_prompts_per_s_unique",
            "tokenize_prompts_per_s_repeated",
        )
    )
    assert set(pipeline["end_to_end_ms"]) == {"image_jpeg_batch1", "image_jpeg_batch8", "text_batch1", "text_batch8"}
    assert "| visual | 1 | onnxruntime |" in (tmp_path / "bench.md").read_text()
    assert "| tokenize, repeated prompts (LRU cache) |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert result["stats"] == data["stats"]


@pytest.fixture(scope="module")
def int8_tiny(tiny_checkpoint, tmp_path_factory):
    from clip_onnx.export.pipeline import export_bundle

    return export_bundle(
        str(tiny_checkpoint), tmp_path_factory.mktemp("int8") / "int8", precision="int8", gate=False
    ).path


def test_bench_times_existing_bundles_beside_eager_torch_in_one_run(tiny_checkpoint, tiny_bundle, int8_tiny, tmp_path):
    result = run_benchmark(
        str(tiny_checkpoint), tmp_path, bundles=[tiny_bundle, int8_tiny], batches=[1, 2], warmup=1, repeat=2
    )
    rows = {(s["backend"], s["tower"]) for s in result["stats"]}
    native_bf16 = result["header"]["cpu_flags"]["avx512_bf16"] or result["header"]["cpu_flags"]["amx_bf16"]
    eager = ["torch", "torch-bf16"] if native_bf16 else ["torch"]
    assert rows == {
        (b, t)
        for b in eager + ["onnxruntime-fp32", "onnxruntime-int8"]
        for t in ("visual", "textual", "textual-padded")
    }
    assert set(result["header"]["cpu_flags"]) == {
        "avx2",
        "avx512_vnni",
        "avx_vnni",
        "amx_int8",
        "amx_bf16",
        "avx512_bf16",
    }
    if not native_bf16:
        assert "no native bf16" in result["skipped"]["torch-bf16"]
    # Interleaved: one sample list per backend, tower and batch, all the same length.
    assert {len(s["seconds"]) for s in result["samples"]} == {2}
    assert [b["label"] for b in result["bundles"]] == ["onnxruntime-fp32", "onnxruntime-int8"]
    acc = result["accuracy"]
    assert acc["onnxruntime-fp32"]["reference"] == "torch" and acc["onnxruntime-fp32"]["passed"]
    assert acc["onnxruntime-int8"]["gate"] == "int8" and 0.9 < acc["onnxruntime-int8"]["visual"]["min_cosine"] < 1
    assert all(s["speedup_vs_torch"] > 0 for s in result["stats"])
    md = (tmp_path / "bench.md").read_text()
    assert "CPU flags: avx2 " in md and f"Bundle `onnxruntime-int8`: {int8_tiny}" in md


def test_bench_on_bundles_alone_compares_with_the_fp32_bundle(tiny_bundle, int8_tiny, tmp_path):
    from clip_onnx.bundle import read_bundle

    twin = shutil.copytree(tiny_bundle, tmp_path / "twin")
    result = run_benchmark(
        None, tmp_path / "out", bundles=[tiny_bundle, twin, int8_tiny], batches=[2], warmup=0, repeat=1
    )
    labels = ["onnxruntime-fp32 (tiny)", "onnxruntime-fp32 (twin)", "onnxruntime-int8"]
    assert [b["label"] for b in result["bundles"]] == labels
    assert {s["backend"] for s in result["stats"]} == set(labels)
    acc = result["accuracy"]
    assert acc["onnxruntime-int8"]["reference"] == "onnxruntime-fp32 (tiny)"
    assert acc["onnxruntime-fp32 (twin)"]["visual"]["min_cosine"] > 0.9999999
    assert result["text_tokens"]["torch"] == read_bundle(tiny_bundle).manifest.to_dict()["tokenizer"]["context_length"]


def test_bench_refuses_bundles_of_different_models_and_eager_backends_without_source(
    tiny_bundle, demo_bundle, tmp_path
):
    from clip_onnx.errors import InputError

    with pytest.raises(InputError, match="hold different models"):
        run_benchmark(None, tmp_path, bundles=[tiny_bundle, demo_bundle], batches=[1])
    with pytest.raises(InputError, match="give a model SOURCE"):
        run_benchmark(None, tmp_path, batches=[1])
    with pytest.raises(InputError, match=r"'onnxruntime-int8'\] beside --bundle"):
        run_benchmark(None, tmp_path, bundles=[tiny_bundle], backends=["onnxruntime-int8"], batches=[1])
    result = run_benchmark(None, tmp_path, bundles=[tiny_bundle], backends=["torch"], batches=[1], warmup=0, repeat=1)
    assert "need the model SOURCE" in result["skipped"]["torch"]


def test_torch_bf16_backend_runs_under_autocast_and_is_skipped_without_native_bf16(tiny_checkpoint):
    import torch

    from clip_onnx.benchmark.backends import BackendUnavailable, torch_bf16_backend
    from clip_onnx.export.families import load_model

    model = load_model(str(tiny_checkpoint))
    towers = {"visual": model.visual}
    with pytest.raises(BackendUnavailable, match="no native bf16"):
        torch_bf16_backend(towers, {"avx2", "avx512_vnni"})
    # Where the CPU lacks bf16, torch emulates it: slow, but the numbers are the real bf16 ones.
    backend = torch_bf16_backend(towers, {"amx_bf16"})
    pixels = torch.randn(2, 3, model.preprocess.image_size, model.preprocess.image_size)
    got = backend.run["visual"](backend.prepare("visual", {"pixel_values": pixels.numpy()}))
    assert got.dtype == torch.bfloat16 and backend.gate is None
    with torch.no_grad():
        ref = model.visual.module(pixels)
    cos = torch.nn.functional.cosine_similarity(got.float(), ref, dim=1)
    assert 0.99 < float(cos.min()) < 1.0


def test_cli_bench_on_a_bundle(tiny_bundle, tmp_path):
    from click.testing import CliRunner

    from clip_onnx.cli import cli

    refused = CliRunner().invoke(cli, ["bench"])
    assert refused.exit_code == 2 and "give a model SOURCE, one or more --bundle PATH" in refused.output
    done = CliRunner().invoke(
        cli,
        [
            "bench",
            "--bundle",
            str(tiny_bundle),
            "--batch",
            "1",
            "--warmup",
            "0",
            "--repeat",
            "1",
            "--out",
            str(tmp_path),
        ],
    )
    assert done.exit_code == 0, done.output
    assert "| visual | 1 | onnxruntime-fp32 |" in done.output and (tmp_path / "bench.json").exists()


def test_bench_on_a_classifier_source_times_its_one_tower(tmp_path):
    # A timm CLIP-ViT classifier has no text tower: every backend runs the visual graph alone.
    import timm
    from timm.models import save_for_hf

    model = timm.create_model(
        "vit_base_patch32_clip_224.openai_ft_in1k", pretrained=False, depth=1, embed_dim=64, num_heads=2
    )
    save_for_hf(model, tmp_path / "ckpt", model_args={"depth": 1, "embed_dim": 64, "num_heads": 2})
    result = run_benchmark(
        str(tmp_path / "ckpt"),
        tmp_path / "out",
        backends=["torch", "onnxruntime", "onnxruntime-int8"],
        batches=[1],
        warmup=0,
        repeat=1,
    )
    rows = {(s["backend"], s["tower"]) for s in result["stats"]}
    assert rows == {(b, "visual") for b in ("torch", "onnxruntime", "onnxruntime-int8")}
    assert set(result["accuracy"]["onnxruntime-int8"]) >= {"visual"} and "textual" not in result["accuracy"]["torch"]
    assert "cold_start" not in result and (tmp_path / "out" / "bench.md").is_file()
