"""timm CLIP-ViT ImageNet classifiers: registry vs timm, preprocessing, a reduced-size export, ClipClassifier, FP16."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from PIL import Image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from clip_onnx.bundle import read_bundle
from clip_onnx.cli import cli
from clip_onnx.errors import BundleError, InputError, ModelSourceError
from clip_onnx.export.families import timm_clip
from clip_onnx.export.pipeline import export_bundle, export_model
from clip_onnx.registry import list_models
from clip_onnx.runtime import ClipClassifier, ClipModel
from clip_onnx.runtime.preprocess import ImagePreprocessor
from clip_onnx.synthetic import synthetic_images
from tests.manifests import SELF_TEST_CLASSIFIER

NAMES = sorted(s.name for s in list_models() if s.family == "timm_clip")
# mmpretrain's CLIP table (configs/clip/README.md) maps to these timm tags; the two ViT-L ones are extra.
REQUIRED = {
    "vit_base_patch32_clip_224.laion2b_ft_in12k_in1k",
    "vit_base_patch16_clip_384.openai_ft_in12k_in1k",
    "vit_base_patch32_clip_448.laion2b_ft_in12k_in1k",
    "vit_base_patch16_clip_224.openai_ft_in1k",
    "vit_base_patch16_clip_224.laion2b_ft_in12k_in1k",
    "vit_large_patch14_clip_224.openai_ft_in12k_in1k",
    "vit_large_patch14_clip_336.laion2b_ft_in12k_in1k",
}
TINY = dict(depth=2, embed_dim=128, num_heads=4)


def _meta_model(name: str, **kwargs):
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **kwargs)


def test_registry_covers_the_required_tags_and_timm_knows_them_all():
    assert REQUIRED <= set(NAMES) and len(NAMES) == 16
    assert set(NAMES) <= set(timm.list_pretrained("vit_*_clip_*"))
    assert all(name.endswith("in1k") for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_registered_record_matches_the_timm_architecture_and_data_config(name):
    from clip_onnx.registry import get_model

    config = get_model(name).config
    model = _meta_model(name)
    data = resolve_data_config({}, model=model)
    assert (
        model.embed_dim,
        len(model.blocks),
        model.blocks[0].attn.num_heads,
        model.patch_embed.patch_size[0],
        model.num_classes,
    ) == (config["embed_dim"], config["depth"], config["num_heads"], config["patch_size"], config["num_classes"])
    assert (data["input_size"][1], data["crop_pct"], data["crop_mode"], data["interpolation"]) == (
        config["image_size"],
        config["crop_pct"],
        config["crop_mode"],
        config["interpolation"],
    )
    assert list(data["mean"]) == config["mean"] and list(data["std"]) == config["std"]


def _varied_images():
    rng = np.random.default_rng(0)
    noise = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for w, h in ((300, 200), (123, 457), (448, 448), (640, 480), (31, 17), (405, 404))
    ]
    return synthetic_images(5, seed=4) + noise


# One name per distinct data config (crop mode, crop_pct, size, mean/std).
_DATA_CONFIGS = {}
for _name in NAMES:
    _cfg = resolve_data_config({}, model=_meta_model(_name))
    _DATA_CONFIGS.setdefault(json.dumps(_cfg, sort_keys=True, default=list), _name)


@pytest.mark.parametrize("name", sorted(_DATA_CONFIGS.values()))
def test_preprocessing_matches_timm_eval_transform(name):
    data = resolve_data_config({}, model=_meta_model(name))
    ours = ImagePreprocessor(timm_clip.preprocess_from_timm(data))
    reference = create_transform(**data)
    for img in _varied_images():
        assert np.abs(ours([img])[0] - reference(img).numpy()).max() <= 1e-6


def test_preprocessing_refuses_what_it_cannot_reproduce():
    data = dict(resolve_data_config({}, model=_meta_model(NAMES[0])))
    with pytest.raises(ModelSourceError, match="crop_mode 'border'"):
        timm_clip.preprocess_from_timm(dict(data, crop_mode="border"))
    with pytest.raises(ModelSourceError, match="non-square"):
        timm_clip.preprocess_from_timm(dict(data, input_size=(3, 224, 256)))


def _tiny(name="vit_base_patch32_clip_224.laion2b_ft_in12k_in1k"):
    """Reduced widths and depth; zero position and class embeddings make the
    random classifier look at the picture, so its top-1 varies from image to image."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **TINY).eval()
    with torch.no_grad():
        model.pos_embed.zero_()
        model.cls_token.zero_()
    return model


@pytest.fixture(scope="module")
def tiny_model():
    return _tiny()


@pytest.fixture(scope="module")
def bundle(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("timm") / "b"
    export_model(timm_clip.exportable("tiny-b32", "tiny", tiny_model), out)
    return out


def test_classifier_bundle_has_one_graph_labels_and_a_logit_gate(bundle):
    manifest = read_bundle(bundle).manifest.to_dict()
    assert manifest["kind"] == "classifier" and set(manifest["graphs"]) == {"visual"}
    assert set(manifest["files"]) == {"visual.onnx", "labels.txt", *SELF_TEST_CLASSIFIER}
    assert manifest["labels"] == {"file": "labels.txt", "count": 1000}
    assert "tokenizer" not in manifest and "logit_scale" not in manifest
    assert manifest["graphs"]["visual"]["output"] == "logits"
    assert manifest["preprocess"] == {
        "image_size": 224,
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "crop": "resize_then_crop",
        "resize_size": 248,
        "convert": "before",
    }  # timm datasets convert on load
    (parity,) = manifest["parity"]
    assert parity["passed"] and parity["top1_agreement"] == 1.0 and {r["batch"] for r in parity["rows"]} == {1, 3, 8}
    labels = (bundle / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert labels[0] == "tench, Tinca tinca" and labels[-1] == "toilet tissue, toilet paper, bathroom tissue"


def test_predict_matches_eager_timm_with_its_own_transform(bundle, tiny_model):
    images = synthetic_images(6, seed=9)
    transform = create_transform(**resolve_data_config({}, model=tiny_model))
    with torch.no_grad():
        expected = tiny_model(torch.stack([transform(img) for img in images])).softmax(dim=1).numpy()
    classifier = ClipClassifier.load(bundle, batch_size=4)
    result = classifier.predict(images, top_k=3)
    assert result.probs.shape == (6, 3) and result.indices.shape == (6, 3)
    np.testing.assert_array_equal(result.indices[:, 0], expected.argmax(axis=1))
    np.testing.assert_allclose(result.probs, np.take_along_axis(expected, result.indices, axis=1), atol=1e-6)
    assert np.all(np.diff(result.probs, axis=1) <= 0)
    assert result.labels[0][0] == classifier.labels[result.indices[0, 0]]


def test_predict_refuses_bad_arguments_and_the_wrong_bundle_kind(bundle, tiny_bundle):
    classifier = ClipClassifier.load(bundle)
    image = synthetic_images(1)[0]
    for top_k in (0, 1001, True, 2.0):
        with pytest.raises(InputError, match="top_k"):
            classifier.predict([image], top_k=top_k)
    with pytest.raises(InputError, match="single"):
        classifier.predict(image)
    with pytest.raises(BundleError, match="not a classifier"):
        ClipClassifier.load(tiny_bundle)
    with pytest.raises(BundleError, match="not a two-tower"):
        ClipModel.load(bundle)


def _eager_top(tiny_model, image, k: int) -> list[tuple[str, float]]:
    """timm itself on ``image`` with its own transform: the top ``k`` (class name, probability)."""
    transform = create_transform(**resolve_data_config({}, model=tiny_model))
    with torch.no_grad():
        probs = tiny_model(transform(image)[None]).softmax(dim=1)[0].numpy()
    info = ImageNetInfo()  # timm's own ImageNet-1k names, not the package's labels.txt
    return [(info.index_to_description(int(i)), float(probs[i])) for i in np.argsort(-probs)[:k]]


def test_predict_runs_without_torch(bundle, tiny_model, tmp_path):
    image = tmp_path / "img.png"
    synthetic_images(1, seed=3)[0].save(image)
    script = (
        "import sys\n"
        "for name in ('torch', 'timm', 'onnx', 'transformers'): sys.modules[name] = None\n"
        "from clip_onnx.runtime import ClipClassifier\n"
        f"p = ClipClassifier.load({str(bundle)!r}).predict([{str(image)!r}], top_k=2)\n"
        "for label, prob in zip(p.labels[0], p.probs[0]): print(f'{label}\\t{float(prob)!r}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = [line.split("\t") for line in done.stdout.splitlines()]
    expected = _eager_top(tiny_model, Image.open(image), 2)
    assert [label for label, _ in printed] == [label for label, _ in expected]
    np.testing.assert_allclose([float(p) for _, p in printed], [p for _, p in expected], atol=1e-6)


def test_cli_predict(bundle, tiny_model, tmp_path):
    image = tmp_path / "img.png"
    synthetic_images(1, seed=3)[0].save(image)
    result = CliRunner().invoke(cli, ["predict", str(bundle), str(image), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    expected = "; ".join(f"{label} {p:.3f}" for label, p in _eager_top(tiny_model, Image.open(image), 2))
    assert result.output == f"{image}: {expected}\n"


def test_fp16_classifier_keeps_top1_on_208_varied_images(tiny_model, tmp_path):
    bundle = export_model(
        timm_clip.exportable("tiny-b32", "tiny", tiny_model), tmp_path / "b16", precision="fp16", gate_images=208
    )
    gate = bundle.manifest.to_dict()["parity"][1]
    assert gate["images"] == 208 and gate["passed"]
    assert gate["top1_agreement"] >= 0.995 and gate["rows"][0]["min_cosine"] >= 0.999
    assert bundle.manifest.to_dict()["graphs"]["visual"]["precision"] == "fp16"
    # The agreement means something only if the fp32 answers vary across the images.
    preprocess = ImagePreprocessor(timm_clip.preprocess_from_timm(resolve_data_config({}, model=tiny_model)))
    with torch.no_grad():
        top1 = tiny_model(torch.from_numpy(preprocess(synthetic_images(16, 1)))).argmax(dim=1)
    assert len(set(top1.tolist())) >= 5


def test_local_directory_in_timm_hub_layout(tmp_path):
    from timm.models import save_for_hf

    model = _tiny("vit_base_patch16_clip_384.openai_ft_in12k_in1k")
    save_for_hf(model, tmp_path / "ckpt", model_args=TINY)
    bundle = export_bundle(str(tmp_path / "ckpt"), tmp_path / "b")
    manifest = bundle.manifest.to_dict()
    assert manifest["model"]["family"] == "timm_clip" and manifest["parity"][0]["passed"]
    # This tag squashes: resize to floor(384 / 0.95) = 404 squared, then centre crop 384.
    assert (manifest["preprocess"]["crop"], manifest["preprocess"]["resize_size"]) == ("squash_then_crop", 404)


def test_registered_name_offline_names_hub_local_directory_and_random_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads the variable once, at import: set the parsed flag too, or the test goes online.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError) as err:
        export_bundle("vit_base_patch32_clip_224.laion2b_ft_in12k_in1k", tmp_path / "x")
    message = str(err.value)
    for needle in (
        "timm/vit_base_patch32_clip_224.laion2b_ft_in12k_in1k",
        "HF_HUB_OFFLINE",
        "local directory",
        "--random-weights",
    ):
        assert needle in message


@pytest.mark.slow
def test_full_size_b32_random_weights_export_passes_parity(tmp_path):
    bundle = export_bundle("vit_base_patch32_clip_224.laion2b_ft_in12k_in1k", tmp_path / "b", random_weights=True)
    assert bundle.manifest.to_dict()["parity"][0]["passed"]
    result = ClipClassifier.load(tmp_path / "b").predict(synthetic_images(2), top_k=5)
    assert result.probs.shape == (2, 5)
