"""The open_clip family: every registered name, tiny-depth parity, sequence cutting, XLM-R masks, external data."""

import functools
import shutil

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from clip_onnx.bundle import read_bundle
from clip_onnx.errors import BundleError, ModelSourceError
from clip_onnx.export import onnx as onnx_export
from clip_onnx.export.families import load_model
from clip_onnx.export.families import open_clip as oc
from clip_onnx.export.pipeline import export_bundle, export_model
from clip_onnx.registry import list_models
from clip_onnx.runtime import ClipModel
from clip_onnx.runtime.backends.onnxruntime import OnnxRuntimeRunner
from clip_onnx.runtime.images import to_eight_bit
from clip_onnx.runtime.preprocess import ImagePreprocessor

NAMES = sorted(s.name for s in list_models() if s.family == "open_clip")
B32, XLMR = "ViT-B-32@openai", "xlm-roberta-large-ViT-H-14@frozen_laion5b_s13b_b90k"
TEXTS = ["a cat", "a photo of a dog running on the beach at sunset, seen from far away", "", "pizza!"]
MULTI = ["кошка", "eine Katze schläft auf dem Sofa, neben einem Hund und einer Lampe", "", "猫", "Hello <pad> world"]
# Full parameter counts of open_clip 3.3's configs (HF text tower included), millions.
FULL_PARAMS_M = {
    "ViT-B-32": 151.3,
    "ViT-B-16": 149.6,
    "ViT-L-14": 427.6,
    "ViT-L-14-336": 427.9,
    "ViT-H-14": 986.1,
    "xlm-roberta-large-ViT-H-14": 1193.0,
}


def tiny(name: str) -> dict:
    """Overrides that keep a model's image size, patch, activation and tower kinds but cut depth and width."""
    cfg = open_clip.get_model_config(oc.parse_source(name).model)
    out = {"embed_dim": 32, "vision_cfg": {"layers": 1, "width": 64, "head_width": 32}}
    if "hf_model_name" in cfg["text_cfg"]:
        out["hf_config"] = {
            "hidden_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "vocab_size": oc.DEMO_VOCAB_SIZE,
        }
    else:
        out["text_cfg"] = {"layers": 1, "width": 64, "heads": 2}
    return out


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """Tiny-depth exports of B-32 (CLIP BPE) and XLM-R, each loaded once: name -> (ExportableModel, bundle dir)."""
    cache = {}

    def get(name):
        if name not in cache:
            model = oc.load(name, random_weights=True, overrides=tiny(name))
            out = tmp_path_factory.mktemp("oc") / "bundle"
            export_model(model, out)
            cache[name] = (model, out)
        return cache[name]

    return get


def test_registered_names_are_open_clip_pairs_with_their_hub_ids():
    assert len(NAMES) == 7
    for spec in list_models():
        if spec.family != "open_clip":
            continue
        src = oc.parse_source(spec.name)
        assert (src.model, src.tag) == (spec.config["model"], spec.config["tag"])
        hub = open_clip.get_pretrained_cfg(src.model, src.tag)["hf_hub"].rstrip("/")
        assert spec.hub_id == hub


@pytest.mark.parametrize("name", NAMES)
def test_full_size_architecture_builds_on_meta(name):
    src = oc.parse_source(name)
    with torch.device("meta"):
        model, info = oc.create(src, random_weights=True, device="meta")
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(FULL_PARAMS_M[src.model], abs=0.1)
    assert info["quick_gelu"] == (src.tag == "openai")  # OpenAI weights were trained with QuickGELU
    spec = oc.preprocess_spec(open_clip.get_model_preprocess_cfg(model))
    assert spec.image_size == spec.resize_size == (336 if "336" in name else 224)
    assert (spec.crop, spec.interpolation) == ("resize_then_crop", "bicubic")
    tower, sequence = oc.text_tower(model)
    assert sequence["dynamic"] and tower.dynamic_axes["input_ids"] == {0: "batch", 1: "seq"}


@pytest.mark.parametrize("name", [n for n in NAMES if n != "ViT-B-32@laion2b_s34b_b79k"])
def test_reduced_depth_export_passes_parity(name, tiny_export, tmp_path):
    if name in (B32, XLMR):
        model, out = tiny_export(name)
    else:
        model = oc.load(name, random_weights=True, overrides=tiny(name))
        out = tmp_path / "b"
        export_model(model, out)
    manifest = read_bundle(out).manifest.to_dict()
    (parity,) = manifest["parity"]
    assert parity["passed"] and {r["batch"] for r in parity["rows"]} == {1, 3, 8}
    assert manifest["model"]["family"] == "open_clip" and manifest["templates"][0] == "itap of a {}."
    assert manifest["model"]["config"]["text_sequence"]["dynamic"]
    assert manifest["graphs"]["textual"]["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "seq"}
    kind = "unigram" if name == XLMR else "clip_bpe"
    assert manifest["tokenizer"]["kind"] == kind and manifest["tokenizer"]["file"] in manifest["files"]


@pytest.mark.parametrize(
    "text_cfg,why", [({"no_causal_mask": True}, "no causal mask"), ({"pool_type": "last"}, "pooling 'last'")]
)
def test_text_towers_that_cannot_be_cut_keep_a_fixed_length_and_say_why(text_cfg, why):
    overrides = tiny(B32)
    overrides["text_cfg"] = {**overrides["text_cfg"], **text_cfg}
    model, _ = oc.create(oc.parse_source(B32), random_weights=True, overrides=overrides)
    tower, sequence = oc.text_tower(model)
    assert not sequence["dynamic"] and why in sequence["reason"]
    assert tower.dynamic_axes == {"input_ids": {0: "batch"}}
    ids = open_clip.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(tower.module(ids), model.encode_text(ids), rtol=0, atol=0)


def test_external_data_is_hashed_survives_a_move_and_truncation_is_refused(tmp_path, monkeypatch):
    # The LAION B-32 name's tiny parity run, with every graph forced to external data.
    monkeypatch.setattr(onnx_export, "_EXTERNAL_DATA_THRESHOLD", 0)
    name = "ViT-B-32@laion2b_s34b_b79k"
    bundle = export_model(oc.load(name, random_weights=True, overrides=tiny(name)), tmp_path / "b")
    assert bundle.manifest.to_dict()["parity"][0]["passed"]
    files = bundle.manifest.to_dict()["files"]
    assert {"visual.onnx.data", "textual.onnx.data"} <= set(files)
    assert all(len(files[f]["sha256"]) == 64 for f in files)
    before = ClipModel.load(tmp_path / "b").encode_text(TEXTS)
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(tmp_path / "b", moved)
    np.testing.assert_array_equal(ClipModel.load(moved).encode_text(TEXTS), before)
    data = moved / "textual.onnx.data"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(BundleError, match="textual.onnx.data.*truncated"):
        ClipModel.load(moved)


def test_cut_prompts_match_open_clip_on_77_padded_ids(tiny_export):
    model, out = tiny_export(B32)
    reference = model.textual.module.model
    clip = ClipModel.load(out)
    ids = open_clip.tokenize(TEXTS)
    np.testing.assert_array_equal(clip.tokenize(TEXTS)["input_ids"], ids.numpy())
    longest = int((ids != 0).sum(dim=1).max())
    assert clip._textual_feed(TEXTS)["input_ids"].shape == (4, longest) and longest < 77  # cut to the longest prompt
    with torch.no_grad():
        expected = reference.encode_text(ids).numpy()
    got = clip.encode_text(TEXTS, normalize=False)
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)
    padded = OnnxRuntimeRunner(out / "textual.onnx").infer({"input_ids": ids.numpy()})["text_embeds"]
    np.testing.assert_allclose(got, padded, atol=2e-6, rtol=0)


def _hf_ids(bundle, texts):
    """What open_clip's HFTokenizer gives for the bundle's tokenizer.json: whitespace-cleaned, padded to 77."""
    from open_clip.tokenizer import whitespace_clean
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(bundle / "tokenizer.json"), pad_token="<pad>")
    out = hf(
        [whitespace_clean(t) for t in texts], padding="max_length", truncation=True, max_length=77, return_tensors="np"
    )
    return out["input_ids"].astype(np.int64), out["attention_mask"].astype(np.int64)


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_xlmr_parity_across_batches_and_lengths_with_padding(tiny_export, batch):
    model, out = tiny_export(XLMR)
    reference = model.textual.module.model
    texts = (MULTI * 2)[:batch]
    ids, mask = _hf_ids(out, texts)
    np.testing.assert_array_equal(model.tokenize(texts)["input_ids"], ids)
    with torch.no_grad():
        expected = reference.encode_text(torch.from_numpy(ids)).numpy()  # open_clip masks by pad id itself
    runner = OnnxRuntimeRunner(out / "textual.onnx")
    longest = int(mask.sum(axis=1).max())
    assert mask.min() == 0 or batch == 1  # the batch really has padding
    for length in sorted({longest, longest + 3, 40, 77}):
        got = runner.infer({"input_ids": ids[:, :length], "attention_mask": mask[:, :length]})["text_embeds"]
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5, err_msg=f"length {length}")
    np.testing.assert_allclose(ClipModel.load(out).encode_text(texts, normalize=False), expected, atol=1e-6, rtol=1e-5)


def test_xlmr_graph_honours_an_explicit_mask_like_open_clip_honours_pad_ids(tiny_export):
    model, out = tiny_export(XLMR)
    ids, mask = _hf_ids(out, MULTI[1:2])
    mask[0, 3] = 0  # hide one real token
    hidden = ids.copy()
    hidden[0, 3] = 1
    with torch.no_grad():
        expected = model.textual.module.model.encode_text(torch.from_numpy(hidden)).numpy()
    got = OnnxRuntimeRunner(out / "textual.onnx").infer({"input_ids": ids, "attention_mask": mask})["text_embeds"]
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)


def _images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (301, 451, 3), dtype=np.uint8))
    return {
        "rgb-wide": rgb,
        "rgb-tall": rgb.transpose(Image.Transpose.ROTATE_90),
        "tiny": rgb.resize((5, 3)),
        "grayscale": rgb.convert("L"),
        "gray-alpha": rgb.convert("LA"),
        "rgba": Image.fromarray(rng.integers(0, 256, (300, 451, 4), dtype=np.uint8)),
        "palette": rgb.convert("P"),
        "16-bit": Image.fromarray(rng.integers(0, 65536, (300, 451), dtype=np.uint16)),
    }


@functools.cache
def _pipelines(name):
    """(open_clip's eval transform from create_model_and_transforms, our ImagePreprocessor) for a tiny ``name``."""
    src, overrides = oc.parse_source(name), tiny(name)
    cfg = open_clip.get_model_config(src.model)
    tag = open_clip.get_pretrained_cfg(src.model, src.tag)
    _, _, transform = open_clip.create_model_and_transforms(
        src.model,
        pretrained=None,
        image_mean=tag["mean"],
        image_std=tag["std"],
        vision_cfg={**cfg["vision_cfg"], **overrides["vision_cfg"]},
        text_cfg={**cfg["text_cfg"], **overrides["text_cfg"]},
    )
    model, _ = oc.create(src, random_weights=True, overrides=overrides)
    return transform, ImagePreprocessor(oc.preprocess_spec(open_clip.get_model_preprocess_cfg(model)))


# open_clip converts to RGB after Resize and CenterCrop (PreprocessSpec.convert="after"); the order
# matters for modes PIL resizes differently: premultiplied alpha, palette, 16-bit.
@pytest.mark.parametrize("kind", list(_images()))
@pytest.mark.parametrize("name", [B32, "ViT-L-14-336@openai"])
def test_preprocessing_matches_open_clip_transform(name, kind):
    transform, ours = _pipelines(name)
    image = _images()[kind]
    # A deliberate deviation: open_clip's convert("RGB") clips 16-bit pixels to white; we scale them to
    # 8 bits, so open_clip is given the 8-bit picture (docs/parity-security.md, "Preprocessing").
    reference = to_eight_bit(image, kind) if kind == "16-bit" else image
    np.testing.assert_allclose(ours([image])[0], transform(reference).numpy(), atol=1e-6, rtol=0)


def test_local_checkpoint_path_loads_its_weights(tmp_path):
    model, _ = oc.create(oc.parse_source(B32), random_weights=True, overrides=tiny(B32))
    with torch.no_grad():
        model.logit_scale.fill_(4.0)  # distinct from the random init, so it must come from the file
    torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    loaded = oc.load(f"ViT-B-32@{tmp_path}/open_clip_pytorch_model.bin", overrides=tiny(B32))
    assert loaded.logit_scale == pytest.approx(np.exp(4.0), rel=1e-6)
    assert loaded.config["checkpoint"] == str(tmp_path / "open_clip_pytorch_model.bin")


def test_sources_are_claimed_and_bad_ones_name_the_options(tmp_path):
    assert oc.claims("ViT-B-32@openai") and oc.claims("hf-hub:laion/x") and oc.claims("ViT-B-32@bogus")
    assert not oc.claims("no-such-model") and not oc.claims(str(tmp_path))
    with pytest.raises(ModelSourceError, match="laion2b_s34b_b79k"):
        load_model("ViT-B-32@bogus")
    with pytest.raises(ModelSourceError, match="does not exist"):
        load_model(f"ViT-B-32@{tmp_path}/missing.bin")
    with pytest.raises(ModelSourceError, match="--random-weights"):
        load_model("ViT-B-32")


def test_registered_name_offline_names_hub_checkpoint_and_random_options(tmp_path, monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE when imported, so setting the variable now is not enough.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelSourceError) as err:
        export_bundle(B32, tmp_path / "x")
    message = str(err.value)
    assert "timm/vit_base_patch32_clip_224.openai" in message and "ViT-B-32@/path/to/" in message
    assert "--random-weights" in message and not (tmp_path / "x").exists()


def test_local_dir_with_a_hub_style_xlmr_tokenizer_exports_what_open_clip_runs(tmp_path):
    """open_clip's local-dir layout with a SentencePiece-made tokenizer.json (Precompiled charsmap, as on the hub)."""
    import json

    import sentencepiece  # noqa: F401  (tests/sentencepiece_xlmr.py trains the tokenizer with it)
    from open_clip.tokenizer import HFTokenizer

    try:
        from tests import sentencepiece_xlmr
    except ImportError:
        import sentencepiece_xlmr

    vocab, charsmap = sentencepiece_xlmr.train(vocab_size=3000)
    directory = sentencepiece_xlmr.write_hub_directory(
        tmp_path / "ckpt", sentencepiece_xlmr.hub_layout(vocab, charsmap)
    )
    hf_dir = directory / "xlm-roberta-tiny"
    from transformers import XLMRobertaConfig

    XLMRobertaConfig(
        vocab_size=len(vocab) + 1,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    ).save_pretrained(hf_dir)
    cfg = open_clip.get_model_config("xlm-roberta-large-ViT-H-14")
    cfg = {
        **cfg,
        "embed_dim": 32,
        "vision_cfg": {**cfg["vision_cfg"], "layers": 1, "width": 64, "head_width": 32},
        "text_cfg": {**cfg["text_cfg"], "hf_model_name": str(hf_dir), "hf_tokenizer_name": str(hf_dir)},
    }
    torch.manual_seed(3)
    reference = open_clip.create_model(
        "xlm-roberta-large-ViT-H-14",
        pretrained=None,
        pretrained_text=False,
        **{k: v for k, v in cfg.items() if k != "text_cfg"},
        text_cfg={**cfg["text_cfg"], "hf_model_pretrained": False},
    ).eval()
    torch.save(reference.state_dict(), directory / "open_clip_pytorch_model.bin")
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))

    bundle = export_bundle(f"local-dir:{directory}", tmp_path / "bundle")
    assert bundle.manifest.to_dict()["parity"][0]["passed"]
    assert bundle.manifest.to_dict()["tokenizer"]["scores"] == "exact"
    carried = json.loads((tmp_path / "bundle" / "tokenizer.json").read_text(encoding="utf-8"))
    assert "Precompiled" in json.dumps(carried["normalizer"])
    texts = [*MULTI, "ＦＵＬＬ　ｗｉｄｔｈ ﬁne café", "  spaced   out\ttext  "]
    expected_ids = HFTokenizer(str(directory), context_length=77)(texts)
    clip = ClipModel.load(tmp_path / "bundle")
    np.testing.assert_array_equal(clip.tokenize(texts)["input_ids"], expected_ids.numpy())
    with torch.no_grad():
        expected = reference.encode_text(expected_ids).numpy()
    np.testing.assert_allclose(clip.encode_text(texts, normalize=False), expected, atol=1e-6, rtol=1e-5)


def test_demo_tokenizer_is_reproducible_and_xlmr_shaped():
    import json

    text = oc.demo_unigram_json()
    assert text == oc.demo_unigram_json()
    vocab = json.loads(text)["model"]["vocab"]
    assert [p for p, _ in vocab[:4]] == ["<s>", "<pad>", "</s>", "<unk>"] and len(vocab) == oc.DEMO_VOCAB_SIZE


@pytest.mark.slow
def test_full_size_b32_export_passes_parity(tmp_path):
    bundle = export_bundle(B32, tmp_path / "b", random_weights=True)
    assert bundle.manifest.to_dict()["parity"][0]["passed"]
    assert ClipModel.load(tmp_path / "b").encode_text(["a cat"]).shape == (1, 512)


@pytest.mark.slow
def test_full_size_xlmr_export_uses_external_data(tmp_path):
    bundle = export_bundle(XLMR, tmp_path / "b", random_weights=True)
    assert (
        bundle.manifest.to_dict()["parity"][0]["passed"] and "textual.onnx.data" in bundle.manifest.to_dict()["files"]
    )
    assert ClipModel.load(tmp_path / "b").encode_text(["кошка"]).shape == (1, 1024)


@pytest.mark.parametrize("name", ["ViT-B-32@openai", "xlm-roberta-large-ViT-H-14@frozen_laion5b_s13b_b90k"])
def test_fp16_export_lowers_both_towers_behind_the_gate(name, tmp_path):
    model = oc.load(name, random_weights=True, overrides=tiny(name))
    bundle = export_model(model, tmp_path / "b", precision="fp16", gate_images=96)
    graphs = bundle.manifest.to_dict()["graphs"]
    assert {graphs[t]["precision"] for t in ("visual", "textual")} == {"fp16"}, graphs
    assert all(isinstance(graphs[t]["fp32_op_types"], list) for t in ("visual", "textual"))
    gate = bundle.manifest.to_dict()["parity"][-1]
    assert gate["passed"] and min(r["min_cosine"] for r in gate["rows"]) >= 0.999
