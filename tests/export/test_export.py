"""Export of RuCLIP checkpoints: graphs, symbolic axes, parity gate, bundle contents."""

import json

import numpy as np
import onnx
import pytest
import torch

from clip_onnx.bundle import read_bundle
from clip_onnx.errors import ModelSourceError, ParityError
from clip_onnx.export.pipeline import export_bundle
from clip_onnx.parity import THRESHOLDS, Thresholds
from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images
from tests.bundles import TINY_CONFIG, write_checkpoint
from tests.manifests import SELF_TEST_CLIP, stub_manifest


def test_bundle_has_graphs_tokenizer_and_a_complete_manifest(tiny_bundle, tiny_checkpoint):
    manifest = read_bundle(tiny_bundle).manifest.to_dict()
    assert set(manifest["files"]) == {"visual.onnx", "textual.onnx", "bpe.model", *SELF_TEST_CLIP}
    assert manifest["logit_scale"] == pytest.approx(np.exp(4.0), rel=1e-6)
    assert manifest["embed_dim"] == TINY_CONFIG["embed_dim"]
    assert manifest["tokenizer"] == {
        "kind": "yttm_bpe",
        "file": "bpe.model",
        "context_length": 77,
        "bos_id": 2,
        "eos_id": 3,
        "pad_id": 0,
        "lowercase": True,
    }
    assert manifest["preprocess"]["crop"] == "crop_then_resize"
    assert manifest["preprocess"]["image_size"] == 64
    assert manifest["graphs"]["textual"]["inputs"] == ["input_ids"]
    assert manifest["graphs"]["visual"]["output"] == "image_embeds"
    assert manifest["model"]["source"] == str(tiny_checkpoint)
    (parity,) = manifest["parity"]
    assert parity["passed"] and {r["batch"] for r in parity["rows"]} == {1, 3, 8}
    assert min(r["min_cosine"] for r in parity["rows"]) >= 0.99999
    assert max(r["max_abs"] for r in parity["rows"]) <= 1e-4
    assert (tiny_bundle / "bpe.model").read_bytes() == (tiny_checkpoint / "bpe.model").read_bytes()


@pytest.mark.parametrize(
    "graph,name,static", [("visual.onnx", "pixel_values", [3, 64, 64]), ("textual.onnx", "input_ids", [0])]
)
def test_graph_inputs_have_a_symbolic_batch_axis(tiny_bundle, graph, name, static):
    """Batch is symbolic; so is the text sequence (0 = symbolic), which the runtime cuts to the longest prompt."""
    (inp,) = onnx.load(tiny_bundle / graph).graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == name and dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == static
    assert all(d.dim_param for d, size in zip(dims[1:], static, strict=True) if size == 0)


def test_runtime_matches_ruclip_eager_on_a_batch_of_very_different_lengths(
    tiny_bundle, tiny_checkpoint, ruclip_reference
):
    arch = {k: v for k, v in TINY_CONFIG.items() if k not in ("mean", "std")}
    reference = ruclip_reference["model"].CLIP(**arch).eval()
    reference.load_state_dict(torch.load(tiny_checkpoint / "pytorch_model.bin"))
    processor = ruclip_reference["processor"].RuCLIPProcessor(str(tiny_checkpoint / "bpe.model"), image_size=64)
    texts = ["кот", "очень длинное описание " * 30, "", "Собака, бегущая по пляжу в солнечный день"]
    model = ClipModel.load(tiny_bundle)
    with torch.no_grad():
        expected = reference.encode_text(processor(text=texts)["input_ids"]).numpy()
    got = model.encode_text(texts, normalize=False)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    images = synthetic_images(5, seed=3)
    with torch.no_grad():
        expected = reference.encode_image(processor(images=images)["pixel_values"]).numpy()
    np.testing.assert_allclose(model.encode_image(images, normalize=False), expected, atol=1e-5, rtol=0)


def test_parity_gate_fails_loudly_and_leaves_no_bundle(tmp_path, tiny_checkpoint, monkeypatch):
    # A gate that asks for more than float32 can give must fail every row, list them all,
    # and leave nothing behind that could be mistaken for a bundle.
    from clip_onnx.export import pipeline

    impossible = Thresholds(min_cosine=1.1, max_abs=0.0, min_top1_agreement=1.0)
    monkeypatch.setattr(pipeline, "THRESHOLDS", {**THRESHOLDS, "fp32": impossible})
    out = tmp_path / "bundle"
    with pytest.raises(ParityError) as err:
        export_bundle(str(tiny_checkpoint), out)
    # (visual 3 batches + textual 3 batches, padded and cut to the longest prompt) x (cosine, max abs)
    assert len(err.value.failures) == 18
    assert "textual batch 8 seq 77" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_bundle_is_readable_by_other_users_as_the_umask_allows(tmp_path):
    import os
    import stat

    from clip_onnx.bundle import BundleWriter
    from clip_onnx.files import current_umask as _umask

    with BundleWriter(tmp_path / "b") as writer:
        data = writer.dir / "weights.data"
        data.write_bytes(b"x")
        data.chmod(0o600)  # what onnx's external-data writer leaves
        bundle = writer.commit(stub_manifest())
    mask = _umask()
    assert stat.S_IMODE(os.stat(bundle.path).st_mode) == 0o777 & ~mask
    for name in ("weights.data", "manifest.json"):
        assert stat.S_IMODE(os.stat(bundle.path / name).st_mode) == 0o666 & ~mask
    if mask == 0o022:
        assert stat.S_IMODE(os.stat(bundle.path).st_mode) == 0o755


def test_existing_output_is_refused_unless_overwrite(tmp_path, tiny_checkpoint):
    out = tmp_path / "b"
    out.mkdir()
    with pytest.raises(Exception, match="already exists"):
        export_bundle(str(tiny_checkpoint), out, check_parity=False)
    bundle = export_bundle(str(tiny_checkpoint), out, check_parity=False, overwrite=True)
    assert bundle.manifest.to_dict()["parity"] == [] and read_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_unknown_source_names_both_ways_to_load(tmp_path):
    with pytest.raises(ModelSourceError, match="registered name.*local directory"):
        export_bundle("no-such-model", tmp_path / "x")


def test_incomplete_local_directory_names_missing_files(tmp_path, tiny_checkpoint):
    broken = tmp_path / "ckpt"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(TINY_CONFIG))
    with pytest.raises(ModelSourceError, match="pytorch_model.bin"):
        export_bundle(str(broken), tmp_path / "x")


def test_registered_name_offline_names_hub_and_local_options(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelSourceError) as err:
        export_bundle("ruclip-vit-base-patch32-224", tmp_path / "x")
    message = str(err.value)
    assert "ai-forever/ruclip-vit-base-patch32-224" in message and "local directory" in message
    assert "--random-weights" in message


# One tiny configuration per registered shape family: same image size and patch, shrunk widths.
SHAPE_FAMILIES = {
    "ruclip-vit-base-patch32-224": (224, 32),
    "ruclip-vit-base-patch16-224": (224, 16),
    "ruclip-vit-base-patch32-384": (384, 32),
    "ruclip-vit-base-patch16-384": (384, 16),
    "ruclip-vit-large-patch14-224": (224, 14),
    "ruclip-vit-large-patch14-336": (336, 14),
}


@pytest.mark.parametrize("name", sorted(SHAPE_FAMILIES))
def test_each_variant_shape_family_passes_parity(name, tmp_path, tiny_bpe):
    from clip_onnx.registry import get_model

    full = get_model(name).config
    config = dict(
        TINY_CONFIG,
        image_resolution=full["image_resolution"],
        vision_patch_size=full["vision_patch_size"],
        vision_layers=1,
        transformer_layers=1,
    )
    assert (config["image_resolution"], config["vision_patch_size"]) == SHAPE_FAMILIES[name]
    checkpoint = write_checkpoint(tmp_path / name, config, tiny_bpe)
    bundle = export_bundle(str(checkpoint), tmp_path / "out")
    assert bundle.manifest.to_dict()["parity"][0]["passed"]
    assert bundle.manifest.to_dict()["preprocess"]["image_size"] == full["image_resolution"]


def test_random_weights_build_registered_architecture(tmp_path):
    # The cheapest full-size variant; the others are covered by the architecture
    # build test and by the slow full-size export.
    bundle = export_bundle("ruclip-vit-base-patch32-224", tmp_path / "b", random_weights=True, check_parity=False)
    assert bundle.manifest.to_dict()["model"]["config"]["vision_width"] == 768
    assert bundle.manifest.to_dict()["preprocess"]["image_size"] == 224


@pytest.mark.slow
def test_full_size_base_patch32_384_export_passes_parity(tmp_path):
    bundle = export_bundle("ruclip-vit-base-patch32-384", tmp_path / "b", random_weights=True)
    assert bundle.manifest.to_dict()["parity"][0]["passed"]
    model = ClipModel.load(tmp_path / "b")
    assert model.encode_text(["кошка"]).shape == (1, 512)
