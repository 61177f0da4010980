"""The torch-free runtime: isolation, bundle integrity, API behaviour and bad input."""

import json
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from clip_onnx.errors import BundleError, ClipOnnxError, InputError
from clip_onnx.runtime import Classification, ClipModel
from clip_onnx.synthetic import synthetic_images


def test_runtime_runs_a_bundle_without_torch_onnx_or_youtokentome(tiny_bundle, tmp_path):
    image = tmp_path / "img.png"
    synthetic_images(1)[0].save(image)
    script = textwrap.dedent(f"""
        import sys
        from clip_onnx.runtime import ClipModel
        m = ClipModel.load({str(tiny_bundle)!r})
        t = m.encode_text(["кошка", "собака"])
        i = m.encode_image([{str(image)!r}])
        c = m.classify([{str(image)!r}], ["кошка", "собака"])
        assert t.shape == (2, 32) and i.shape == (1, 32) and c.probs.shape == (1, 2)
        print(",".join(x for x in ("torch", "onnx", "youtokentome", "torchvision") if x in sys.modules) or "clean")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "clean"


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return ClipModel.load(tiny_bundle)


def test_embeddings_are_unit_float32_and_batching_does_not_change_them(tiny_bundle, model):
    texts = [f"фото номер {i}" for i in range(11)]
    images = synthetic_images(7, seed=5)
    small = ClipModel.load(tiny_bundle, batch_size=3)
    for encode, small_encode, items in (
        (model.encode_text, small.encode_text, texts),
        (model.encode_image, small.encode_image, images),
    ):
        full = encode(items)
        assert full.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1, atol=1e-5)
        np.testing.assert_allclose(small_encode(items), full, atol=1e-5)
        np.testing.assert_allclose(encode(items[2:3]), full[2:3], atol=1e-5)


def test_tokenize_and_preprocess_shapes(model):
    feed = model.tokenize(["кот", ""])
    assert set(feed) == {"input_ids"} and feed["input_ids"].shape == (2, 77) and feed["input_ids"].dtype == np.int64
    pixels = model.preprocess([np.zeros((10, 20, 3), np.uint8)])
    assert pixels.shape == (1, 3, 64, 64) and pixels.dtype == np.float32


def test_similarity_is_logit_scale_times_cosine(model):
    images, texts = synthetic_images(2), ["кот", "дом", "лес"]
    expected = model.logit_scale * model.encode_image(images) @ model.encode_text(texts).T
    np.testing.assert_allclose(model.similarity(images, texts), expected, rtol=1e-5)


def test_classify_ensembles_templates_like_ruclip_predictor(model):
    images, labels = synthetic_images(3, seed=9), ["Кошка ", "собака", "дом"]
    result = model.classify(images, labels)
    assert isinstance(result, Classification) and result.labels == labels
    # ruclip.Predictor: normalized per-template embeddings, averaged, renormalized; label lowercased and stripped.
    per_template = [model.encode_text([t.format(label.lower().strip()) for label in labels]) for t in model.templates]
    text = np.mean(per_template, axis=0)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    logits = model.logit_scale * model.encode_image(images) @ text.T
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(result.probs, expected, rtol=1e-4, atol=1e-6)
    assert len(model.templates) == 6 and model.templates[1] == "фото, на котором изображено {}"


def test_threads_share_one_model(model):
    texts = [f"текст {i}" for i in range(16)]
    expected = model.encode_text(texts)
    results, errors = {}, []

    def work(k):
        try:
            results[k] = model.encode_text(texts)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and all(np.allclose(r, expected, atol=1e-6) for r in results.values())


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda m: m.encode_text([]), "expected at least one text, got an empty list"),
        (lambda m: m.encode_text(["ok", 42]), "text #1 is int 42, expected str"),
        (lambda m: m.encode_text("кошка"), "wrap it in a list"),
        (lambda m: m.encode_image([]), "expected at least one image, got an empty list"),
        (lambda m: m.encode_image("cat.jpg"), "wrap it in a list"),
        (lambda m: m.encode_image(["/no/such/file.jpg"]), "image #0: image file '/no/such/file.jpg' does not exist"),
        (lambda m: m.encode_image([synthetic_images(1)[0], b""]), "image #1: cannot decode image bytes of length 0"),
        (lambda m: m.classify(synthetic_images(1), ["a"], templates=["no placeholder"]), "no placeholder"),
    ],
)
def test_bad_input_raises_typed_errors_naming_the_value(model, call, fragment):
    with pytest.raises(InputError, match=None) as err:
        call(model)
    assert isinstance(err.value, ClipOnnxError) and fragment in str(err.value)


def test_truncated_jpeg_is_refused(model, tmp_path):
    path = tmp_path / "cut.jpg"
    synthetic_images(1)[0].save(path, quality=90)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(InputError, match="cut.jpg"):
        model.encode_image([path])


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "copy")


def test_tampered_graph_is_refused(bundle_copy):
    _flip_a_byte(bundle_copy / "visual.onnx")
    with pytest.raises(BundleError, match="visual.onnx: sha256"):
        ClipModel.load(bundle_copy)


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_text_only_worker_neither_opens_nor_hashes_the_visual_graph(bundle_copy, model):
    _flip_a_byte(bundle_copy / "visual.onnx")
    text_only = ClipModel.load(bundle_copy, towers=("textual",))
    assert text_only.towers == ("textual",)
    texts = ["кошка", "рыжий кот"]
    np.testing.assert_array_equal(text_only.encode_text(texts), model.encode_text(texts))
    with pytest.raises(InputError, match=r"towers=\('textual',\).*'visual'.*images"):
        text_only.encode_image([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(BundleError, match="visual.onnx: sha256"):
        ClipModel.load(bundle_copy)


def test_one_tower_worker_still_checks_its_own_graph(bundle_copy):
    _flip_a_byte(bundle_copy / "textual.onnx")
    with pytest.raises(BundleError, match="textual.onnx: sha256"):
        ClipModel.load(bundle_copy, towers="textual")
    assert ClipModel.load(bundle_copy, towers=["visual"]).encode_image([np.zeros((8, 8, 3), np.uint8)]).shape == (1, 32)


@pytest.mark.parametrize("towers", [(), ("text",), ("visual", "image")])
def test_unknown_towers_are_refused(tiny_bundle, towers):
    with pytest.raises(InputError, match="towers must name one or both"):
        ClipModel.load(tiny_bundle, towers=towers)


def test_truncated_file_is_refused(bundle_copy):
    data = (bundle_copy / "bpe.model").read_bytes()
    (bundle_copy / "bpe.model").write_bytes(data[:-10])
    with pytest.raises(BundleError, match="bpe.model.*truncated"):
        ClipModel.load(bundle_copy)


def test_missing_file_is_refused(bundle_copy):
    (bundle_copy / "textual.onnx").unlink()
    with pytest.raises(BundleError, match="'textual.onnx' is missing"):
        ClipModel.load(bundle_copy)


def test_directory_without_manifest_is_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no manifest.json"):
        ClipModel.load(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        ClipModel.load(tmp_path / "nope")


def test_newer_format_version_is_refused_with_advice(bundle_copy):
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="version 99.*re-export or upgrade"):
        ClipModel.load(bundle_copy)


def test_moved_bundle_still_loads(bundle_copy, tmp_path):
    moved = bundle_copy.rename(tmp_path / "elsewhere")
    assert ClipModel.load(moved).encode_text(["кот"]).shape == (1, 32)


def test_unavailable_execution_provider_is_not_a_silent_cpu_fallback(tiny_bundle):
    from clip_onnx.errors import BackendError

    with pytest.raises(BackendError, match="CUDAExecutionProvider"):
        ClipModel.load(tiny_bundle, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_onnxruntime_and_onnxruntime_gpu_side_by_side_is_detected(tiny_bundle, tmp_path):
    # A real second distribution on the path, as `pip install onnxruntime-gpu` would leave it.
    info = tmp_path / "onnxruntime_gpu-1.20.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.20.0\n")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from clip_onnx.runtime import ClipModel, BackendError
        try:
            ClipModel.load({str(tiny_bundle)!r})
        except BackendError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "both onnxruntime" in out and "onnxruntime-gpu 1.20.0" in out and "install exactly one" in out


def test_sessions_stop_spinning_after_a_run_and_take_their_thread_count_from_the_environment(tiny_bundle, monkeypatch):
    # Two sessions per model: threads of one left spinning would slow the other tower's next call.
    monkeypatch.setenv("CLIP_ONNX_THREADS", "1")
    model = ClipModel.load(tiny_bundle)
    for tower in ("visual", "textual"):
        options = model._runners[tower].session.get_session_options()
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        assert options.intra_op_num_threads == 1


def test_running_a_model_leaves_the_callers_floating_point_state_alone(tiny_bundle):
    # ONNX Runtime's set_denormal_as_zero switches flush-to-zero on for the thread that creates the
    # first session, for good: the host's own arithmetic on that thread would lose subnormals.
    script = textwrap.dedent(f"""
        import numpy as np
        from clip_onnx.runtime import ClipModel
        model = ClipModel.load({str(tiny_bundle)!r})
        model.encode_text(["кот"])
        tiny = np.float32(1e-38) / np.float32(1000)
        print(tiny > 0, np.float32(1e-39) * np.float32(1) > 0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
