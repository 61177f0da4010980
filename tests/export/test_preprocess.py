"""ImagePreprocessor against the torchvision pipelines it replaces, plus PreprocessSpec round trips."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from PIL import Image

from clip_onnx.errors import BundleError, InputError
from clip_onnx.runtime.images import to_eight_bit
from clip_onnx.runtime.preprocess import CLIP_MEAN as MEAN
from clip_onnx.runtime.preprocess import CLIP_STD as STD
from clip_onnx.runtime.preprocess import INTERPOLATIONS, ImagePreprocessor, PreprocessSpec

TOLERANCE = 1e-6

# (width, height): both orientations, tiny, odd, square, sides differing by
# one (RandomResizedCrop's random case), smaller and larger than every target.
SHAPES = [
    (1, 1),
    (3, 7),
    (7, 3),
    (2, 1),
    (31, 17),
    (224, 224),
    (300, 300),
    (640, 480),
    (480, 640),
    (225, 224),
    (101, 100),
    (100, 101),
    (500, 123),
    (123, 500),
    (385, 383),
    (1000, 999),
]
MODES = ["RGB", "L", "RGBA", "P", "I;16", "CMYK", "LA", "1"]
SIZES = [224, 336, 384]


def noise_image(mode: str, width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels in ``mode``: noise makes every interpolation difference visible."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.frombytes(mode, (width, height), rng.integers(0, 65536, (height, width), dtype="<u2").tobytes())
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (height, width), dtype=np.uint8) * 255).convert("1")
    if mode == "P":
        img = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).convert("P")
        img.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        return img
    bands = len(Image.new(mode, (1, 1)).getbands())
    return Image.frombytes(
        mode, (width, height), rng.integers(0, 256, (height, width, bands), dtype=np.uint8).tobytes()
    )


def ruclip_reference(size: int, interpolation=T.InterpolationMode.BILINEAR) -> T.Compose:
    """RuCLIPProcessor's image transform."""
    return T.Compose(
        [
            T.Lambda(lambda img: img.convert("RGB") if img.mode != "RGB" else img),
            T.RandomResizedCrop(size, scale=(1.0, 1.0), ratio=(1.0, 1.0), interpolation=interpolation),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )


def open_clip_reference(size: int, resize_size: int, interpolation=T.InterpolationMode.BICUBIC) -> T.Compose:
    """open_clip's eval transform: convert to RGB first, then Resize, CenterCrop."""
    return T.Compose(
        [
            T.Lambda(lambda img: img.convert("RGB")),
            T.Resize(resize_size, interpolation=interpolation),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )


def depicted(img: Image.Image) -> Image.Image:
    """What the references should be fed: a 16-bit picture scaled to 8 bits, which their convert("RGB") clips white."""
    return to_eight_bit(img, "test image")


def max_abs(ours: np.ndarray, reference: torch.Tensor) -> float:
    assert ours.shape == tuple(reference.shape)
    return float(np.abs(ours - reference.numpy()).max())


def ruclip_central(img: Image.Image, size: int) -> torch.Tensor:
    """RuCLIP's pipeline with the crop offset pinned to the central square (offset 0 for sides differing by one)."""
    img = img.convert("RGB") if img.mode != "RGB" else img
    side = min(img.size)
    top, left = (img.height - side) // 2, (img.width - side) // 2
    img = TF.resized_crop(img, top, left, side, side, [size, size], T.InterpolationMode.BILINEAR, antialias=True)
    return TF.normalize(TF.to_tensor(img), MEAN, STD)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
def test_crop_then_resize_matches_ruclip(size, mode):
    ours = ImagePreprocessor(PreprocessSpec(size, MEAN, STD))
    reference = ruclip_reference(size)
    torch.manual_seed(0)
    for width, height in SHAPES:
        img = noise_image(mode, width, height)
        out = ours([img])[0]
        if abs(width - height) == 1:
            # The reference picks offset 0 or 1 at random here; we always take 0.
            assert max_abs(out, ruclip_central(depicted(img), size)) <= TOLERANCE, (width, height)
        else:
            assert max_abs(out, reference(depicted(img))) <= TOLERANCE, (width, height)


@pytest.mark.parametrize(("width", "height"), [(2, 1), (101, 100), (100, 101), (385, 384)])
def test_crop_then_resize_near_square_is_one_of_the_references_outcomes(width, height):
    img = noise_image("RGB", width, height, seed=3)
    ours = ImagePreprocessor(PreprocessSpec(224, MEAN, STD))([img])[0]
    reference = ruclip_reference(224)
    torch.manual_seed(0)
    outcomes = {reference(img).numpy().tobytes() for _ in range(40)}
    assert len(outcomes) == 2, "the reference is random for sides differing by one"
    assert ours.tobytes() in outcomes


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
def test_resize_then_crop_matches_open_clip(size, mode):
    ours = ImagePreprocessor(PreprocessSpec(size, MEAN, STD, interpolation="bicubic", crop="resize_then_crop"))
    reference = open_clip_reference(size, size)
    for width, height in SHAPES:
        img = noise_image(mode, width, height)
        assert max_abs(ours([img])[0], reference(depicted(img))) <= TOLERANCE, (width, height)


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
@pytest.mark.parametrize(("size", "resize_size"), [(224, 256), (224, 200), (336, 336)])
def test_resize_then_crop_other_filters_and_resize_sizes(interpolation, size, resize_size):
    # resize_size < size exercises CenterCrop's zero padding on resized images.
    spec = PreprocessSpec(
        size, MEAN, STD, interpolation=interpolation, crop="resize_then_crop", resize_size=resize_size
    )
    reference = open_clip_reference(size, resize_size, T.InterpolationMode(interpolation))
    ours = ImagePreprocessor(spec)
    for width, height in [(640, 480), (333, 777), (5, 9), (resize_size, resize_size + 1)]:
        img = noise_image("RGB", width, height, seed=width)
        assert max_abs(ours([img])[0], reference(img)) <= TOLERANCE, (width, height)


@pytest.mark.parametrize("interpolation", ["bicubic", "nearest", "lanczos"])
def test_crop_then_resize_other_filters(interpolation):
    ours = ImagePreprocessor(PreprocessSpec(384, MEAN, STD, interpolation=interpolation))
    reference = ruclip_reference(384, T.InterpolationMode(interpolation))
    for width, height in [(640, 480), (123, 457), (384, 384)]:
        img = noise_image("RGB", width, height, seed=width)
        assert max_abs(ours([img])[0], reference(img)) <= TOLERANCE, (width, height)


def test_normalisation_is_bit_identical_to_torchvision():
    # A 16x16 image holding every uint8 value in every channel.
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = Image.fromarray(np.stack([values, values[::-1], values.T], axis=-1))
    spec = PreprocessSpec(16, MEAN, STD, crop="resize_then_crop")
    ours = ImagePreprocessor(spec)([img])[0]
    reference = TF.normalize(TF.to_tensor(img), MEAN, STD).numpy()
    assert np.array_equal(ours, reference)


def test_output_dtype_shape_contiguity_and_batching():
    spec = PreprocessSpec(224, MEAN, STD, interpolation="bicubic", crop="resize_then_crop")
    preprocess = ImagePreprocessor(spec)
    images = [noise_image(mode, w, h, seed=i) for i, (mode, (w, h)) in enumerate(zip(MODES, SHAPES[3:], strict=False))]
    batch = preprocess(images)
    assert batch.dtype == np.float32
    assert batch.shape == (len(images), 3, 224, 224)
    assert batch.flags["C_CONTIGUOUS"]
    for i, img in enumerate(images):
        assert np.array_equal(batch[i], preprocess([img])[0])
    assert np.array_equal(preprocess(tuple(images)), batch)
    assert np.array_equal(preprocess(iter(images)), batch)


def test_pixels_then_normalize_is_the_whole_call():
    """The two halves a training script uses (with augmentations between them) give exactly ``__call__``."""
    spec = PreprocessSpec(64, MEAN, STD)
    preprocess = ImagePreprocessor(spec)
    images = [noise_image(mode, w, h, seed=i) for i, (mode, (w, h)) in enumerate(zip(MODES, SHAPES[4:], strict=False))]
    pixels = preprocess.pixels(images)
    assert pixels.dtype == np.uint8 and pixels.shape == (len(images), 64, 64, 3)
    assert np.array_equal(preprocess.normalize(pixels), preprocess(images))
    assert np.array_equal(preprocess.normalize(pixels[0]), preprocess(images[:1])[0])
    with pytest.raises(InputError, match="uint8"):
        preprocess.normalize(pixels.astype(np.float32))


def test_accepts_every_load_image_kind(tmp_path):
    img = noise_image("RGB", 50, 40)
    path = tmp_path / "img.png"
    img.save(path)
    preprocess = ImagePreprocessor(PreprocessSpec(32, MEAN, STD))
    batch = preprocess([img, path, str(path), path.read_bytes(), np.asarray(img)])
    for row in batch[1:]:
        assert np.array_equal(row, batch[0])


@pytest.mark.parametrize("single", [noise_image("RGB", 4, 4), "cat.jpg", b"\x89PNG", np.zeros((4, 4, 3), np.uint8)])
def test_bare_single_image_is_refused(single):
    with pytest.raises(InputError, match=r"wrap it in a list"):
        ImagePreprocessor(PreprocessSpec(32, MEAN, STD))(single)


def test_empty_and_bad_batches():
    preprocess = ImagePreprocessor(PreprocessSpec(32, MEAN, STD))
    with pytest.raises(InputError, match="empty"):
        preprocess([])
    with pytest.raises(InputError, match="got int"):
        preprocess(7)
    with pytest.raises(InputError, match=r"image #1: .*float64"):
        preprocess([noise_image("RGB", 4, 4), np.zeros((4, 4, 3))])


# --- spec ------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        PreprocessSpec(224, MEAN, STD),
        PreprocessSpec(384, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", "resize_then_crop", 400),
    ],
)
def test_spec_round_trips_through_json(spec):
    data = json.loads(json.dumps(spec.to_dict()))
    assert PreprocessSpec.from_dict(data) == spec
    assert hash(PreprocessSpec.from_dict(data)) == hash(spec)


def test_spec_stores_tuples():
    spec = PreprocessSpec(224, [0.1, 0.2, 0.3], [1, 1, 1])
    assert spec.mean == (0.1, 0.2, 0.3) and spec.std == (1.0, 1.0, 1.0)


GOOD = {"image_size": 224, "mean": list(MEAN), "std": list(STD)}


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({**GOOD, "crop": "squash"}, "unknown crop mode 'squash'"),
        ({**GOOD, "interpolation": "cubic"}, "unknown interpolation 'cubic'"),
        ({**GOOD, "colour": "rgb"}, r"unknown keys \['colour'\]"),
        ({"image_size": 224, "mean": list(MEAN)}, r"missing keys \['std'\]"),
        ({**GOOD, "image_size": 0}, "image_size must be an int from 1 to 8192, got 0"),
        ({**GOOD, "image_size": "224"}, "image_size must be an int from 1 to 8192, got '224'"),
        ({**GOOD, "image_size": True}, "image_size must be an int from 1 to 8192, got True"),
        ({**GOOD, "resize_size": 2.5}, "resize_size must be an int from 1 to 8192, got 2.5"),
        ({**GOOD, "mean": [0.5, 0.5]}, r"mean must be three finite numbers, got \[0.5, 0.5\]"),
        ({**GOOD, "std": [1, 0, 1]}, r"std must be positive, got \[1, 0, 1\]"),
        ({**GOOD, "std": ["a", 1, 1]}, "std must be three numbers"),
        ({**GOOD, "mean": "123"}, "mean must be three numbers, got '123'"),
        ({**GOOD, "mean": [float("nan"), 0, 0]}, "mean must be three finite numbers"),
        ([1, 2, 3], "must be a mapping, got list"),
    ],
)
def test_from_dict_rejects_bad_specs(data, pattern):
    with pytest.raises(BundleError, match=pattern):
        PreprocessSpec.from_dict(data)


def test_runtime_modules_do_not_import_torch():
    code = (
        "import sys, clip_onnx.runtime.images, clip_onnx.runtime.preprocess\n"
        "bad = sorted({'torch', 'torchvision', 'onnx'} & set(sys.modules))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@settings(max_examples=150, deadline=None)
@given(
    picture=st.tuples(st.integers(1, 60), st.integers(1, 60), st.sampled_from([0, 1, 3, 4])).flatmap(
        lambda s: npst.arrays(np.uint8, s[:2] if s[2] == 0 else s)
    ),
    size=st.sampled_from([16, 24]),
)
def test_any_valid_uint8_array_gets_torchvisions_pixels(picture, size):
    """Hypothesis on top of the fixed shapes: every array load_image takes is answered, as RuCLIP's pipeline would."""
    out = ImagePreprocessor(PreprocessSpec(size, MEAN, STD))([picture])[0]
    img = Image.fromarray(picture[:, :, 0] if picture.ndim == 3 and picture.shape[2] == 1 else picture)
    assert max_abs(out, ruclip_central(img, size)) <= TOLERANCE
