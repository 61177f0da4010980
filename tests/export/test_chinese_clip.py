"""Chinese-CLIP: registered architectures, a reduced-size export against transformers, preprocessing, errors."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner
from PIL import Image

from clip_onnx.bundle import read_bundle
from clip_onnx.cli import cli
from clip_onnx.errors import ModelSourceError
from clip_onnx.export.families import chinese_clip
from clip_onnx.export.pipeline import export_bundle
from clip_onnx.registry import get_model, list_models
from clip_onnx.runtime import ClipModel
from clip_onnx.runtime.preprocess import CLIP_MEAN as MEAN
from clip_onnx.runtime.preprocess import CLIP_STD as STD
from clip_onnx.runtime.preprocess import ImagePreprocessor, PreprocessSpec
from clip_onnx.synthetic import synthetic_images

# The released checkpoints' dimensions (their hub config.json files and parameter counts, in millions).
RELEASED = {
    "OFA-Sys/chinese-clip-vit-base-patch16": dict(
        vision=(768, 12, 12, 3072, 16, 224), text=(768, 12, 12, 3072), projection=512, params=188.3
    ),
    "OFA-Sys/chinese-clip-vit-large-patch14": dict(
        vision=(1024, 24, 16, 4096, 14, 224), text=(768, 12, 12, 3072), projection=768, params=406.2
    ),
    "OFA-Sys/chinese-clip-vit-large-patch14-336px": dict(
        vision=(1024, 24, 16, 4096, 14, 336), text=(768, 12, 12, 3072), projection=768, params=406.6
    ),
    "OFA-Sys/chinese-clip-vit-huge-patch14": dict(
        vision=(1280, 32, 16, 5120, 14, 224), text=(1024, 24, 16, 4096), projection=1024, params=957.6
    ),
}
# Hub-style processor config: a bicubic squash to the square, as cn_clip's image_transform.
HUB_PROCESSOR = {
    "do_resize": True,
    "size": {"height": 64, "width": 64},
    "do_center_crop": False,
    "crop_size": {"height": 64, "width": 64},
    "resample": 3,
    "image_mean": list(MEAN),
    "image_std": list(STD),
    "do_normalize": True,
    "do_convert_rgb": True,
}
TINY = dict(
    projection_dim=32,
    vision_config=dict(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=64,
        patch_size=16,
        projection_dim=32,
    ),
    text_config=dict(
        vocab_size=21128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    ),
)


def test_every_registered_name_is_covered():
    assert {s.name for s in list_models() if s.family == "chinese_clip"} == set(RELEASED)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_random_config_builds_the_released_architecture(name):
    spec = get_model(name)
    config = chinese_clip.random_config(spec)
    v, t, want = config.vision_config, config.text_config, RELEASED[name]
    assert (
        v.hidden_size,
        v.num_hidden_layers,
        v.num_attention_heads,
        v.intermediate_size,
        v.patch_size,
        v.image_size,
    ) == want["vision"]
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size) == want["text"]
    assert (config.projection_dim, v.hidden_act, t.vocab_size) == (want["projection"], "quick_gelu", 21128)
    with torch.device("meta"):
        model = transformers.ChineseCLIPModel(config)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(want["params"], abs=0.05)
    preprocess = PreprocessSpec.from_dict(spec.config["preprocess"])
    assert (preprocess.image_size, preprocess.crop, preprocess.interpolation) == (
        v.image_size,
        "squash_then_crop",
        "bicubic",
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Chinese-CLIP in the transformers layout, with cn_clip's real vocabulary."""
    directory = tmp_path_factory.mktemp("cc") / "tiny-chinese-clip"
    torch.manual_seed(0)
    model = chinese_clip.build_model(transformers.ChineseCLIPConfig(**TINY))
    with torch.no_grad():
        model.logit_scale.fill_(3.0)  # not the init value, so reading it from the checkpoint is visible
    model.save_pretrained(directory)
    shutil.copyfile(chinese_clip.cn_clip_file("vocab.txt"), directory / "vocab.txt")
    (directory / "preprocessor_config.json").write_text(json.dumps(HUB_PROCESSOR))
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return directory


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("cc-bundle") / "b"
    export_bundle(str(checkpoint), out)
    return out


def test_local_checkpoint_exports_with_a_passing_gate_at_several_lengths(bundle):
    manifest = read_bundle(bundle).manifest.to_dict()
    (parity,) = manifest["parity"]
    assert parity["passed"] and {r["batch"] for r in parity["rows"]} == {1, 3, 8}
    # Padded (52 tokens) and trimmed text batches: twice as many textual rows as batch sizes.
    assert sum(r["tower"] == "textual" for r in parity["rows"]) == 6
    assert max(r["max_abs"] for r in parity["rows"]) <= 1e-4
    assert manifest["logit_scale"] == pytest.approx(np.exp(3.0), rel=1e-6)
    assert manifest["tokenizer"] == {
        "kind": "wordpiece",
        "file": "vocab.txt",
        "context_length": 52,
        "lowercase": True,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
    }
    assert manifest["preprocess"]["crop"] == "squash_then_crop" and manifest["preprocess"]["image_size"] == 64
    assert manifest["graphs"]["textual"]["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "sequence"}
    assert manifest["templates"][0] == "{}" and "一张{}的照片。" in manifest["templates"]


def test_runtime_matches_transformers_on_texts_of_very_different_lengths(bundle, checkpoint):
    reference = transformers.ChineseCLIPModel.from_pretrained(checkpoint).eval()
    tokenizer = transformers.BertTokenizer(str(checkpoint / "vocab.txt"))
    texts = ["猫", "一只狗在草地上奔跑", "长城 " * 40, "", "The Great Wall 长城, 2024年"]
    model = ClipModel.load(bundle)
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=52, return_tensors="pt")
    with torch.no_grad():
        expected = reference.get_text_features(**tokens).pooler_output.numpy()
    np.testing.assert_allclose(model.encode_text(texts, normalize=False), expected, atol=1e-5, rtol=0)
    images = synthetic_images(4, seed=7)
    pixels = transformers.ChineseCLIPImageProcessorPil(**HUB_PROCESSOR)(images=images, return_tensors="pt")
    with torch.no_grad():
        expected = reference.get_image_features(**pixels).pooler_output.numpy()
    np.testing.assert_allclose(model.encode_image(images, normalize=False), expected, atol=1e-5, rtol=0)


def test_cli_classify_with_chinese_labels(bundle, tmp_path):
    image = tmp_path / "img.png"
    synthetic_images(1, seed=2)[0].save(image)
    result = CliRunner().invoke(cli, ["classify", str(bundle), str(image), "--labels", "猫", "--labels", "狗"])
    assert result.exit_code == 0, result.output
    assert "猫" in result.output and "狗" in result.output


def _varied_images():
    rng = np.random.default_rng(0)
    noise = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for w, h in ((300, 200), (123, 457), (64, 64), (640, 480), (31, 17))
    ]
    return synthetic_images(6, seed=11) + noise


@pytest.mark.parametrize("size", [224, 336])
def test_preprocessing_matches_cn_clip_and_the_pil_image_processor(size):
    from cn_clip.clip.utils import image_transform

    config = dict(HUB_PROCESSOR, size={"height": size, "width": size}, crop_size={"height": size, "width": size})
    ours = ImagePreprocessor(chinese_clip.preprocess_from_hf(config))
    hf = transformers.ChineseCLIPImageProcessorPil(**config)
    reference = image_transform(size)
    for img in _varied_images():
        got = ours([img])[0]
        assert np.abs(got - hf(images=[img], return_tensors="np")["pixel_values"][0]).max() <= 1e-6
        assert np.abs(got - reference(img).numpy()).max() <= 1e-6


def test_torchvision_image_processor_differs_only_by_its_resampling_kernel():
    # transformers 5's default ChineseCLIPImageProcessor resizes uint8 tensors with torch's
    # antialiased bicubic, not PIL's; the geometry is the same, so the pixels differ by a few levels.
    ours = ImagePreprocessor(chinese_clip.preprocess_from_hf(dict(HUB_PROCESSOR, size={"height": 224, "width": 224})))
    hf = transformers.ChineseCLIPImageProcessor(**dict(HUB_PROCESSOR, size={"height": 224, "width": 224}))
    worst = max(
        np.abs(ours([img])[0] - hf(images=[img], return_tensors="np")["pixel_values"][0]).max()
        for img in _varied_images()
    )
    assert 0 < worst < 0.3  # <= ~20 uint8 levels (upsampled noise); a one-pixel shift would give ~2


def test_processor_config_mapping(caplog):
    squash = chinese_clip.preprocess_from_hf({"size": {"height": 336, "width": 336}, "do_center_crop": False})
    assert (squash.image_size, squash.crop, squash.interpolation, squash.mean) == (
        336,
        "squash_then_crop",
        "bicubic",
        MEAN,
    )
    with caplog.at_level(logging.WARNING):
        default = chinese_clip.preprocess_from_hf({})  # the class defaults: shortest edge 224, centre crop 224
    assert (default.crop, default.resize_size, default.image_size) == ("resize_then_crop", 224, 224)
    assert "one pixel" in caplog.text
    legacy = chinese_clip.preprocess_from_hf({"size": 256, "crop_size": 224, "resample": 2})
    assert (legacy.resize_size, legacy.image_size, legacy.interpolation) == (256, 224, "bilinear")
    with pytest.raises(ModelSourceError, match="non-square"):
        chinese_clip.preprocess_from_hf({"size": {"height": 224, "width": 300}})
    with pytest.raises(ModelSourceError, match="resample"):
        chinese_clip.preprocess_from_hf({"resample": 9})


def test_hub_id_offline_names_hub_local_directory_and_random_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads the variable once, at import: set the parsed flag too, or the test goes online.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError) as err:
        export_bundle("OFA-Sys/chinese-clip-vit-base-patch16", tmp_path / "x")
    message = str(err.value)
    for needle in ("OFA-Sys/chinese-clip-vit-base-patch16", "HF_HUB_OFFLINE", "local directory", "--random-weights"):
        assert needle in message
    assert not (tmp_path / "x").exists()


def test_incomplete_local_directory_names_missing_files(tmp_path, checkpoint):
    broken = tmp_path / "ckpt"
    broken.mkdir()
    shutil.copyfile(checkpoint / "config.json", broken / "config.json")
    with pytest.raises(ModelSourceError, match="vocab.txt.*model.safetensors or pytorch_model.bin"):
        export_bundle(str(broken), tmp_path / "x")


def test_random_weights_refuses_an_unregistered_source(tmp_path, checkpoint):
    with pytest.raises(ModelSourceError, match="registered Chinese-CLIP name"):
        chinese_clip.load(str(checkpoint), random_weights=True)


@pytest.mark.slow
def test_full_size_huge_random_weights_export_passes_parity(tmp_path):
    bundle = export_bundle("OFA-Sys/chinese-clip-vit-huge-patch14", tmp_path / "b", random_weights=True)
    assert bundle.manifest.to_dict()["parity"][0]["passed"]
    model = ClipModel.load(tmp_path / "b")
    assert model.encode_text(["猫"]).shape == (1, 1024)


def test_fp16_export_holds_cosine_and_gates_on_top1(checkpoint, tmp_path):
    bundle = export_bundle(str(checkpoint), tmp_path / "b", precision="fp16", gate_images=96)
    graphs, attempts = bundle.manifest.to_dict()["graphs"], bundle.manifest.to_dict()["parity"][1:]
    # fp16 numerics hold on both towers...
    assert all(r["min_cosine"] >= 0.999 for a in attempts for r in a["rows"]), attempts
    assert graphs["visual"]["precision"] == "fp16"
    # ...but this tiny random text tower embeds every prompt nearly alike, so top-1 over
    # near-ties flips (95.6% measured) and the gate keeps it fp32, saying so.
    both = attempts[0]
    assert both["stage"] == "onnx-fp16[visual+textual]" and not both["passed"]
    assert both["top1_agreement"] < both["thresholds"]["min_top1_agreement"]
    assert graphs["textual"]["precision"] == "fp32" and "missed the gate" in graphs["textual"]["reason"]
