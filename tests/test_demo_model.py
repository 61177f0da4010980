"""The bundled RuCLIP-format demo model (clip_onnx/assets/ruclip-demo) and its synthetic data.

The model is trained by scripts/train_demo_model.py on demo_data's coloured
shapes; here it must classify shape and colour zero-shot, in eager torch with
RuCLIP's own tokenisation (youtokentome), on images of (colour, shape) pairs it
never saw in training.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clip_onnx.export.families import demo_data

ROOT = Path(__file__).resolve().parent.parent
ASSET = ROOT / "clip_onnx" / "assets" / "ruclip-demo"
NATIVE_FILES = {"config.json", "pytorch_model.bin", "bpe.model"}
ARCH_KEYS = ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size",
             "context_length", "vocab_size", "transformer_width", "transformer_heads", "transformer_layers")
UNSEEN_SEED = 20240607          # the seed scripts/train_demo_model.py reports its unseen-pair figures on
MIN_ACCURACY = 0.90
METRICS = ROOT / "scripts" / "demo_model_metrics.json"   # what the training script measured


# ---------------------------------------------------------------------------
# The asset on disk
# ---------------------------------------------------------------------------

def test_asset_holds_exactly_the_native_files_and_is_small():
    files = {p.name for p in ASSET.iterdir()}
    assert files == NATIVE_FILES
    total = sum((ASSET / f).stat().st_size for f in files)
    assert total <= 8 * 2**20, f"asset is {total / 2**20:.2f} MB"


def test_config_is_ruclip_layout():
    config = json.loads((ASSET / "config.json").read_text(encoding="utf-8"))
    assert set(config) == set(ARCH_KEYS) | {"mean", "std"}
    assert config["context_length"] == 77
    assert config["vision_width"] % 64 == 0
    assert config["transformer_width"] % config["transformer_heads"] == 0
    assert config["image_resolution"] % config["vision_patch_size"] == 0
    assert len(config["mean"]) == len(config["std"]) == 3


# ---------------------------------------------------------------------------
# Zero-shot accuracy with torch + youtokentome
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo():
    torch = pytest.importorskip("torch")
    yttm = pytest.importorskip("youtokentome")
    from clip_onnx.export.families.ruclip_model import CLIP

    config = json.loads((ASSET / "config.json").read_text(encoding="utf-8"))
    model = CLIP(**{k: config[k] for k in ARCH_KEYS})
    state = torch.load(ASSET / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values())
    model.load_state_dict(state, strict=True)
    model.eval()
    bpe = yttm.BPE(str(ASSET / "bpe.model"))
    assert bpe.vocab_size() == config["vocab_size"]

    def tokenize(texts):
        # RuCLIPProcessor.encode_text: lower, BPE ids [:75], bos 2 ... eos 3, pad with 0 to 77.
        out = torch.zeros(len(texts), 77, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = bpe.encode([text.lower()], output_type=yttm.OutputType.ID)[0][:75]
            out[i, : len(ids) + 2] = torch.tensor([2, *ids, 3])
        return out

    return torch, model, config, tokenize


def _class_embeddings(torch, model, tokenize, labels, templates):
    """RuCLIP Predictor: per label, normalise each template's embedding, average, renormalise."""
    with torch.no_grad():
        emb = model.encode_text(tokenize(demo_data.zero_shot_prompts(labels, templates)))
    emb = torch.nn.functional.normalize(emb, dim=-1).reshape(len(labels), len(templates), -1).mean(1)
    return torch.nn.functional.normalize(emb, dim=-1)


@pytest.fixture(scope="module")
def unseen_images(demo):
    torch, model, config, _ = demo
    samples = demo_data.heldout_set(1000, seed=UNSEEN_SEED, combos="unseen")
    pixels = demo_data.preprocess([s.image for s in samples], config["image_resolution"], config["mean"], config["std"])
    with torch.no_grad():
        emb = model.encode_image(torch.from_numpy(pixels))
    return samples, torch.nn.functional.normalize(emb, dim=-1)


@pytest.mark.parametrize("task", ["shape", "colour"])
def test_zero_shot_accuracy_on_unseen_colour_shape_pairs(demo, unseen_images, task):
    torch, model, _, tokenize = demo
    samples, images = unseen_images
    assert {(s.colour, s.shape) for s in samples} == set(demo_data.HELD_OUT_COMBOS)
    labels, templates = {
        "shape": (demo_data.SHAPE_LABELS, demo_data.SHAPE_TEMPLATES),
        "colour": (demo_data.COLOUR_LABELS, demo_data.COLOUR_TEMPLATES),
    }[task]
    pred = (images @ _class_embeddings(torch, model, tokenize, labels, templates).T).argmax(1).numpy()
    truth = np.array([labels.index(getattr(s, task)) for s in samples])
    accuracy = float((pred == truth).mean())
    assert accuracy >= MIN_ACCURACY, f"{task} zero-shot accuracy {accuracy:.3f} on unseen pairs"
    # The figures the README quotes come from the training script's run on the same images.
    reported = json.loads(METRICS.read_text(encoding="utf-8"))["unseen"][f"{task}_accuracy"]
    assert abs(accuracy - reported) <= 0.005, f"measured {accuracy:.4f}, {METRICS.name} says {reported}"


@pytest.mark.slow
def test_training_script_reproduces_the_committed_accuracy(tmp_path):
    """A fresh run of scripts/train_demo_model.py (minutes) lands within 1 point of the checkpoint."""
    metrics = tmp_path / "metrics.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_demo_model.py"), "--out", str(tmp_path / "demo"),
                    "--metrics", str(metrics)], check=True, timeout=1800)
    got = json.loads(metrics.read_text(encoding="utf-8"))
    want = json.loads(METRICS.read_text(encoding="utf-8"))
    assert got["train_wall_seconds"] <= 15 * 60
    for split in ("unseen", "seen"):
        for key in ("shape_accuracy", "colour_accuracy"):
            assert abs(got[split][key] - want[split][key]) <= 0.01, (split, key, got[split][key], want[split][key])
    assert {p.name for p in (tmp_path / "demo").iterdir()} == NATIVE_FILES


def test_runtime_tokenizer_matches_youtokentome_on_demo_prompts(demo):
    """clip_onnx's torch-free tokenizer gives the ids the demo model was trained with."""
    _, _, _, tokenize = demo
    from clip_onnx.runtime.tokenizers.yttm_bpe import YttmBpeTokenizer

    prompts = (demo_data.zero_shot_prompts(demo_data.SHAPE_LABELS, demo_data.SHAPE_TEMPLATES)
               + demo_data.zero_shot_prompts(demo_data.COLOUR_LABELS, demo_data.COLOUR_TEMPLATES)
               + [demo_data.pair_label(c, s) for c, s in demo_data.ALL_COMBOS]
               + ["Большая желтая звезда на белом фоне", "фото, на котором изображено море", ""])
    ours = YttmBpeTokenizer(ASSET / "bpe.model")(prompts)["input_ids"]
    np.testing.assert_array_equal(ours, tokenize(prompts).numpy())


# ---------------------------------------------------------------------------
# demo_data itself
# ---------------------------------------------------------------------------

def test_demo_data_imports_only_stdlib_numpy_and_pillow():
    path = Path(demo_data.__file__)
    allowed = set(sys.stdlib_module_names) | {"numpy", "PIL"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]} if node.level == 0 else {"<relative>"}
        else:
            continue
        assert roots <= allowed, f"demo_data imports {roots - allowed}"
    # Loaded on its own (no package __init__), it must not pull in torch.
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('demo_data', {str(path)!r})\n"
            "mod = importlib.util.module_from_spec(spec); sys.modules['demo_data'] = mod\n"
            "spec.loader.exec_module(mod)\n"
            "mod.heldout_set(4)\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_heldout_set_is_deterministic_and_balanced():
    a = demo_data.heldout_set(40, seed=5, combos="unseen")
    b = demo_data.heldout_set(40, seed=5, combos="unseen")
    assert [np.asarray(s.image).tobytes() for s in a] == [np.asarray(s.image).tobytes() for s in b]
    pairs = [(s.colour, s.shape) for s in a]
    assert all(pairs.count(p) == 5 for p in demo_data.HELD_OUT_COMBOS)
    seen = demo_data.heldout_set(len(demo_data.SEEN_COMBOS), seed=5, combos="seen")
    assert {(s.colour, s.shape) for s in seen} == set(demo_data.SEEN_COMBOS)


def test_held_out_pairs_cover_each_colour_and_shape_once_and_never_reach_training():
    held = demo_data.HELD_OUT_COMBOS
    assert sorted(c for c, _ in held) == sorted(demo_data.COLOURS)
    assert sorted(s for _, s in held) == sorted(demo_data.SHAPES)
    samples, texts, mentions = demo_data.sample_training_batch(np.random.default_rng(1), 300)
    assert not {(s.colour, s.shape) for s in samples} & set(held)
    assert len(texts) == len(mentions) == 300


def test_captions_agree_in_gender_and_case():
    assert demo_data.pair_label("красный", "звезда") == "красная звезда"
    assert demo_data.pair_label("синий", "кольцо") == "синее кольцо"
    assert demo_data.pair_label("голубой", "сердце") == "голубое сердце"
    assert demo_data.pair_label("жёлтый", "круг") == "жёлтый круг"
    assert demo_data._np("gen", "синий", "звезда", "маленький") == "маленькой синей звезды"
    assert demo_data._np("ins", "зелёный", "сердце", "большой") == "большим зелёным сердцем"
    assert demo_data._np("acc", "фиолетовый", "звезда", None) == "фиолетовую звезду"
    samples, texts, mentions = demo_data.sample_training_batch(np.random.default_rng(2), 200)
    for sample, text, said in zip(samples, texts, mentions):
        colour, shape, background, size = said
        assert colour in (None, sample.colour) and shape in (None, sample.shape)
        assert colour or shape
        assert background in (None, sample.background) and size in (None, sample.size)
    # Captions stay true of their own image.
    assert demo_data.compatibility(mentions, samples).diagonal().all()


def test_preprocess_matches_ruclip_processor_transform():
    """Centre crop of the largest square + bilinear resize + normalise, as RuCLIPProcessor."""
    T = pytest.importorskip("torchvision.transforms")
    samples = demo_data.heldout_set(24, seed=3, combos="seen")
    assert any(s.image.size[0] != s.image.size[1] for s in samples)
    ours = demo_data.preprocess([s.image for s in samples], 64)
    transform = T.Compose([
        T.Lambda(lambda img: img.convert("RGB") if img.mode != "RGB" else img),
        T.RandomResizedCrop(64, scale=(1.0, 1.0), ratio=(1.0, 1.0)),
        T.ToTensor(),
        T.Normalize(mean=demo_data.RUCLIP_MEAN, std=demo_data.RUCLIP_STD),
    ])
    reference = np.stack([transform(s.image).numpy() for s in samples])
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_preprocess_matches_runtime_preprocessor_when_available():
    if importlib.util.find_spec("clip_onnx.runtime.preprocess") is None:
        pytest.skip("clip_onnx.runtime.preprocess not available")
    from clip_onnx.runtime.preprocess import ImagePreprocessor, PreprocessSpec

    samples = demo_data.heldout_set(16, seed=4, combos="unseen")
    spec = PreprocessSpec(64, demo_data.RUCLIP_MEAN, demo_data.RUCLIP_STD,
                          interpolation="bilinear", crop="crop_then_resize")
    theirs = ImagePreprocessor(spec)([s.image for s in samples])
    np.testing.assert_allclose(demo_data.preprocess([s.image for s in samples], 64), theirs, atol=1e-5)
