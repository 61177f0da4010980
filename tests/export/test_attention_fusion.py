"""Attention fused into MultiHeadAttention for the INT8 graphs: same outputs, fewer nodes, unknown shapes left alone."""

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from clip_onnx.export.attention import fuse_attention
from clip_onnx.export.families import timm_clip
from clip_onnx.export.int8 import quantize_int8
from clip_onnx.export.pipeline import export_bundle, export_model
from tests.bundles import TINY_CONFIG


def _run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _feeds(rng) -> dict:
    # Shapes other than the export's (batch 2, full context): batch 3, and text cut to 9 positions.
    ids = rng.integers(4, 500, (3, 9)).astype(np.int64)
    ids[:, 0], ids[:, 5] = 2, 3
    return {
        "visual": {"pixel_values": rng.standard_normal((3, 3, 64, 64)).astype(np.float32)},
        "textual": {"input_ids": ids},
    }


@pytest.mark.parametrize("tower", ["visual", "textual"])
def test_every_ruclip_block_fuses_and_the_graph_computes_the_same(tiny_bundle, tower):
    original = onnx.load(tiny_bundle / f"{tower}.onnx")
    fused = onnx.load(tiny_bundle / f"{tower}.onnx")
    layers = TINY_CONFIG["vision_layers" if tower == "visual" else "transformer_layers"]
    assert fuse_attention(fused) == layers
    onnx.checker.check_model(fused)
    before, after = _ops(original), _ops(fused)
    assert after["MultiHeadAttention"] == layers and after["Softmax"] == 0
    # The packed in-projection became three projections on its weights' column slices: no Split.
    assert after["Split"] == 0 and after["MatMul"] == before["MatMul"]
    assert after["Transpose"] <= before["Transpose"] - 3 * layers
    assert len(fused.graph.node) < len(original.graph.node) - 10 * layers
    feed = _feeds(np.random.default_rng(0))[tower]
    np.testing.assert_allclose(_run(fused, feed), _run(original, feed), atol=2e-5, rtol=0)


def _scramble_first_merge(model: onnx.ModelProto) -> None:
    """The first block merges its heads without moving them back behind the sequence axis."""
    merge = next(n for n in model.graph.node if n.op_type == "Transpose" and list(n.attribute[0].ints) == [0, 2, 1, 3])
    merge.attribute[0].ints[:] = [0, 1, 2, 3]


def test_a_block_of_another_shape_is_left_as_it_is(tiny_bundle):
    original = onnx.load(tiny_bundle / "textual.onnx")
    scrambled = onnx.load(tiny_bundle / "textual.onnx")
    _scramble_first_merge(scrambled)
    model = onnx.load(tiny_bundle / "textual.onnx")
    _scramble_first_merge(model)
    assert fuse_attention(model) == TINY_CONFIG["transformer_layers"] - 1
    assert _ops(model)["Softmax"] == 1
    feed = _feeds(np.random.default_rng(1))["textual"]
    np.testing.assert_allclose(_run(model, feed), _run(scrambled, feed), atol=2e-5, rtol=0)
    assert not np.allclose(_run(model, feed), _run(original, feed), atol=1e-3)


def test_a_graph_without_attention_is_untouched():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "plain", [x], [y])
    model = helper.make_model(graph)
    before = model.SerializeToString()
    assert fuse_attention(model) == 0
    assert model.SerializeToString() == before


def test_timm_attention_fuses_too(tmp_path):
    import timm
    import torch

    torch.manual_seed(0)
    net = timm.create_model(
        "vit_base_patch32_clip_224.laion2b_ft_in12k_in1k", pretrained=False, depth=2, embed_dim=64, num_heads=2
    ).eval()
    export_model(timm_clip.exportable("tiny", "tiny", net), tmp_path / "b")
    model = onnx.load(tmp_path / "b" / "visual.onnx")
    original = onnx.load(tmp_path / "b" / "visual.onnx")
    assert fuse_attention(model) == 2
    feed = {"pixel_values": np.random.default_rng(2).standard_normal((3, 3, 224, 224)).astype(np.float32)}
    np.testing.assert_allclose(_run(model, feed), _run(original, feed), atol=2e-5, rtol=0)


def test_int8_graphs_carry_the_fused_attention_and_record_it(tiny_checkpoint, tmp_path):
    bundle = export_bundle(str(tiny_checkpoint), tmp_path / "b", precision="int8", gate_images=16, min_agreement=0)
    for tower, layers in (("visual", TINY_CONFIG["vision_layers"]), ("textual", TINY_CONFIG["transformer_layers"])):
        graph = bundle.manifest.to_dict()["graphs"][tower]
        assert graph["precision"] == "int8" and graph["fused_attention"] == layers
        assert _ops(onnx.load(bundle.path / graph["file"]))["MultiHeadAttention"] == layers
    assert sorted(p.name for p in bundle.path.iterdir()) == [
        "bpe.model",
        "manifest.json",
        "self_test",
        "textual.onnx",
        "visual.onnx",
    ]


def test_the_unfused_rung_quantizes_the_graph_as_exported(tiny_bundle, tmp_path):
    details = quantize_int8(tiny_bundle / "visual.onnx", tmp_path / "visual.int8.onnx", fuse=False)
    assert details["fused_attention"] == 0
    assert _ops(onnx.load(tmp_path / "visual.int8.onnx"))["MultiHeadAttention"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visual.int8.onnx"]


def test_open_clip_multihead_attention_fuses_sequence_first(tmp_path):
    from clip_onnx.export.families import open_clip as oc
    from tests.export.test_open_clip import tiny

    model = oc.load("ViT-B-32@openai", random_weights=True, overrides=tiny("ViT-B-32@openai"))
    export_model(model, tmp_path / "b")
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 400, (3, 9)).astype(np.int64)
    ids[:, 6] = 49407  # open_clip pools at the largest id (its EOT)
    feeds = {"visual": {"pixel_values": rng.standard_normal((3, 3, 224, 224)).astype(np.float32)}, "textual": {}}
    for tower in ("visual", "textual"):
        original = onnx.load(tmp_path / "b" / f"{tower}.onnx")
        fused = onnx.load(tmp_path / "b" / f"{tower}.onnx")
        feed = feeds[tower] or {original.graph.input[0].name: ids}
        assert fuse_attention(fused) == 1  # the tiny configuration has one layer per tower
        assert _ops(fused)["Transpose"] < _ops(original)["Transpose"] and _ops(fused)["Softmax"] == 0
        np.testing.assert_allclose(_run(fused, feed), _run(original, feed), atol=2e-5, rtol=0)


def test_hugging_face_separate_projections_fuse_where_no_mask_guard_follows(tmp_path):
    # Chinese-CLIP: the ViT's q, k and v are separate Linear layers; BERT's Softmax is followed by
    # a NaN guard for fully masked rows, which MultiHeadAttention does not reproduce, so it stays.
    import json
    import shutil

    import torch
    import transformers

    from clip_onnx.export.families import chinese_clip
    from tests.export.test_chinese_clip import HUB_PROCESSOR, TINY

    torch.manual_seed(0)
    chinese_clip.build_model(transformers.ChineseCLIPConfig(**TINY)).save_pretrained(tmp_path / "ckpt")
    shutil.copyfile(chinese_clip.cn_clip_file("vocab.txt"), tmp_path / "ckpt" / "vocab.txt")
    (tmp_path / "ckpt" / "preprocessor_config.json").write_text(json.dumps(HUB_PROCESSOR))
    export_bundle(str(tmp_path / "ckpt"), tmp_path / "b")
    visual, original = onnx.load(tmp_path / "b" / "visual.onnx"), onnx.load(tmp_path / "b" / "visual.onnx")
    assert fuse_attention(visual) == TINY["vision_config"]["num_hidden_layers"]
    feed = {"pixel_values": np.random.default_rng(4).standard_normal((3, 3, 64, 64)).astype(np.float32)}
    np.testing.assert_allclose(_run(visual, feed), _run(original, feed), atol=2e-5, rtol=0)
    assert fuse_attention(onnx.load(tmp_path / "b" / "textual.onnx")) == 0


def test_a_target_in_another_folder_still_gets_the_fused_graph_and_nothing_is_left_behind(tiny_bundle, tmp_path):
    source = tmp_path / "src" / "visual.onnx"
    source.parent.mkdir()
    source.write_bytes((tiny_bundle / "visual.onnx").read_bytes())
    (tmp_path / "out").mkdir()
    details = quantize_int8(source, tmp_path / "out" / "visual.int8.onnx")
    assert details["fused_attention"] == TINY_CONFIG["vision_layers"]
    assert [p.name for p in source.parent.iterdir()] == ["visual.onnx"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["visual.int8.onnx"]
