"""Argument types at the API boundary, and one shared model under load."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import pytest

from clip_onnx.errors import ClipOnnxError, InputError
from clip_onnx.runtime import ClipClassifier, ClipModel
from clip_onnx.synthetic import synthetic_images
from clip_onnx.texts import check_templates


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return ClipModel.load(tiny_bundle)


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda m: m.encode_image(5), "int"),
        (lambda m: m.encode_image(None), "NoneType"),
        (lambda m: m.encode_text(5), "int"),
        (lambda m: m.encode_text([b"bytes"]), "bytes"),
        (lambda m: m.similarity(5, ["кот"]), "int"),
        (lambda m: m.classify([np.zeros((8, 8, 3), np.uint8)], 5), "int"),
        (lambda m: m.encode_text(["кот"], progress=5), "progress"),
    ],
)
def test_wrong_argument_types_are_input_errors(model, call, fragment):
    with pytest.raises(InputError, match=fragment):
        call(model)


@pytest.mark.parametrize("path", [None, 5, 3.5, ["a"], b"/tmp"])
def test_load_of_something_that_is_not_a_path(path):
    with pytest.raises(InputError, match="must be a str or os.PathLike"):
        ClipModel.load(path)
    with pytest.raises(InputError, match="must be a str or os.PathLike"):
        ClipClassifier.load(path)


@pytest.mark.parametrize("batch_size", ["8", 2.5, 0, -1, True, None])
def test_batch_size_must_be_a_positive_int(tiny_bundle, batch_size):
    with pytest.raises(InputError, match=f"batch_size must be an int >= 1, got {type(batch_size).__name__}"):
        ClipModel.load(tiny_bundle, batch_size=batch_size)


@pytest.mark.parametrize("towers", [5, None, [1], "both"])
def test_towers_must_name_towers(tiny_bundle, towers):
    with pytest.raises(InputError, match="towers must name one or both"):
        ClipModel.load(tiny_bundle, towers=towers)


@pytest.mark.parametrize(
    "templates,fragment",
    [
        (["{} и {}"], "exactly one '{}'"),
        (["{x} {}"], "exactly one '{}'"),
        (["{"], "not a format string"),
        (["}"], "not a format string"),
        (["{0}"], "exactly one '{}'"),
        (["{!r}"], "exactly one '{}'"),
        (["{:>{}}"], "exactly one '{}'"),
        (["фото {}", "no label"], "'no label'"),
        (["фото {}", 5], "is int"),
        ("фото {}", "wrap it in a list"),
        ([], "at least one template"),
        (5, "int"),
    ],
)
def test_templates_need_exactly_one_plain_replacement_field(model, templates, fragment):
    with pytest.raises(InputError, match=None) as err:
        model.classify([np.zeros((8, 8, 3), np.uint8)], ["кот", "дом"], templates=templates)
    assert fragment in str(err.value)
    with pytest.raises(InputError):
        check_templates(templates)


def test_braces_are_fine_in_labels_and_as_escaped_literals(model):
    image = [np.zeros((8, 8, 3), np.uint8)]
    # An escaped "{}" in the template: a text replace of "{}" would put the label there too.
    result = model.classify(image, ["{x}", "кот {}"], templates=["{{}} фото {{x}}: {}"])
    # One template: each label's prompt is the template filled in by hand, braces kept literally.
    prompts = ["{} фото {x}: {x}", "{} фото {x}: кот {}"]
    logits = model.logit_scale * model.encode_image(image) @ model.encode_text(prompts).T
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(result.probs, expected, rtol=0, atol=1e-6)
    assert result.labels == ["{x}", "кот {}"]


def test_every_error_of_the_boundary_is_a_clip_onnx_error(model):
    for call in (
        lambda: model.encode_image(object()),
        lambda: model.encode_image([object()]),
        lambda: model.encode_text(object()),
        lambda: model.classify([b"x"], ["a"]),
    ):
        with pytest.raises(ClipOnnxError):
            call()


# --- load ------------------------------------------------------------------------------------------------------

THREADS, CALLS = 16, 50


def mixed_calls(seed: int = 0) -> list[tuple]:
    rng = random.Random(seed)
    images = synthetic_images(6, seed=3)
    words = ["кот", "собака", "дом", "красный круг", "синий квадрат", "", "ёжик в тумане"]
    calls = []
    for _ in range(THREADS * CALLS):
        kind = rng.choice(["text", "image", "classify"])
        if kind == "text":
            calls.append(("text", tuple(rng.sample(words, rng.randint(1, 4)))))
        elif kind == "image":
            calls.append(("image", tuple(rng.sample(range(len(images)), rng.randint(1, 3)))))
        else:
            calls.append(("classify", (rng.randrange(len(images)),), tuple(rng.sample(words[:5], 2))))
    return calls, images


def run_call(model, images, call) -> np.ndarray:
    if call[0] == "text":
        return model.encode_text(list(call[1]))
    if call[0] == "image":
        return model.encode_image([images[i] for i in call[1]])
    return model.classify([images[i] for i in call[1]], list(call[2])).probs


def test_16_threads_of_mixed_calls_on_one_model_match_serial_and_finish(demo_bundle):
    model = ClipModel.load(demo_bundle, batch_size=2)  # small batches: more runs interleave
    calls, images = mixed_calls()
    serial = [run_call(model, images, call) for call in calls]
    order = list(range(len(calls)))
    random.Random(1).shuffle(order)
    with ThreadPoolExecutor(THREADS) as pool:
        futures = {i: pool.submit(run_call, model, images, calls[i]) for i in order}
        done, pending = wait(futures.values(), timeout=300)
        assert not pending, f"{len(pending)} calls still running after 300 s: a deadlock"
    for i, future in futures.items():
        np.testing.assert_allclose(future.result(), serial[i], rtol=0, atol=1e-6, err_msg=str(calls[i]))


def test_ten_thousand_prompts_in_one_call_stay_under_200_mb(demo_bundle):
    # A fresh process, so the measurement is this call's alone; clear_refs resets the peak after loading.
    script = textwrap.dedent(f"""
        import numpy as np
        from clip_onnx.runtime import ClipModel

        def kib(field):
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith(field))

        model = ClipModel.load({str(demo_bundle)!r})
        model.encode_text(["разогрев"] * 64)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = kib("VmRSS:")
        colours, shapes = ["красный", "синий", "зелёный", "жёлтый", "белый"], ["круг", "квадрат", "звезда"]
        prompts = [f"фото номер {{i}}: {{colours[i % 5]}} {{shapes[i % 3]}} и синий квадрат" for i in range(10_000)]
        out = model.encode_text(prompts)
        print((kib("VmHWM:") - before) / 1024)
        # Measured; now the vectors: rows from the start, middle and end, against the same prompts alone.
        rows = [0, 4_999, 9_998]  # three different prompts, whose vectors differ
        assert min(np.abs(out[a] - out[b]).max() for a, b in ((0, 4_999), (0, 9_998), (4_999, 9_998))) > 1e-3
        np.testing.assert_allclose(out[rows], model.encode_text([prompts[i] for i in rows]), rtol=0, atol=1e-5)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    growth_mb = float(result.stdout.strip())
    assert growth_mb < 200, f"peak RSS grew by {growth_mb:.0f} MB for 10,000 prompts"


def test_every_entry_point_agrees_on_what_a_batch_of_images_is(model):
    """One rule (runtime.images.check_image_batch) for encode_image, preprocess and the classifier."""
    stacked = np.stack([np.asarray(p.resize((48, 40))) for p in synthetic_images(3, seed=2)])
    from_list = model.encode_image(list(stacked))
    np.testing.assert_array_equal(model.encode_image(stacked), from_list)
    np.testing.assert_array_equal(model.preprocess(stacked), model.preprocess(list(stacked)))
    for single in (stacked[0], None, bytearray(b"\x89PNG"), memoryview(b"x")):
        for call in (model.encode_image, model.preprocess):
            with pytest.raises(InputError, match="expected a list of images, got a single"):
                call(single)
