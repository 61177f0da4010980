"""Every Pillow mode is embedded as the picture it shows: 16-bit and float modes scaled, premultiplied alpha converted.

Pillow's convert("RGB"), which the reference pipelines call, clips a 16-bit
picture to white and a 0..1 float picture to black; these tests fail on that.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clip_onnx.errors import InputError
from clip_onnx.runtime.images import load_image
from clip_onnx.runtime.preprocess import ImagePreprocessor, PreprocessSpec

SPEC = PreprocessSpec(24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop="resize_then_crop")
PREPROCESS = ImagePreprocessor(SPEC)
# One 8-bit level after normalisation: (1 / 255) / std.
LEVEL = 1 / 255 / 0.25


def grey_picture() -> np.ndarray:
    """24x24 greys from 16 to 240 in blocks: mid-tones, so clipping to white or black shows."""
    levels = np.array([16, 64, 96, 128, 160, 200, 240, 32, 80], np.uint8)
    return np.kron(levels.reshape(3, 3), np.ones((8, 8), np.uint8))


def colour_picture() -> np.ndarray:
    grey = grey_picture()
    return np.stack([grey, grey[::-1], grey.T], axis=-1)


def make(mode: str) -> tuple[Image.Image, np.ndarray, float]:
    """An image in ``mode``, the 8-bit RGB picture it depicts, and the tolerance (in 8-bit levels) of the mode."""
    grey, colour = grey_picture(), colour_picture()
    rgb_grey = np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        wide = grey.astype(np.uint16) * 257  # a true 16-bit picture: 0..65535
        dtype = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2"}[mode]
        return Image.frombytes(mode, (24, 24), wide.astype(dtype).tobytes()), rgb_grey, 0
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 257), rgb_grey, 0
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32)), rgb_grey, 0
    if mode == "1":
        bw = np.where(grey >= 128, 255, 0).astype(np.uint8)
        return Image.fromarray(bw).convert("1", dither=Image.Dither.NONE), np.repeat(bw[:, :, None], 3, axis=2), 0
    if mode in ("L", "LA", "La"):
        return Image.fromarray(grey).convert("LA" if mode != "L" else "L").convert(mode), rgb_grey, 0
    if mode in ("P", "PA"):
        img = Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
        return (img if mode == "P" else img.convert("PA")), colour, 0
    # Colour-space round trips lose levels in Pillow's integer maths; its LAB conversion is a rough one both ways.
    tolerance = {"YCbCr": 3, "LAB": 20, "HSV": 6}.get(mode, 0)
    return Image.fromarray(colour).convert(mode), colour, tolerance


@pytest.mark.parametrize("mode", sorted(Image.MODES))
def test_every_pillow_mode_embeds_the_picture_it_shows(mode):
    img, picture, tolerance = make(mode)
    assert img.mode == mode
    got = PREPROCESS([img])[0]
    want = PREPROCESS([picture])[0]
    worst = float(np.abs(got - want).max()) / LEVEL
    assert worst <= tolerance + 1e-3, f"{mode}: off by {worst:.1f} levels from the picture it depicts"
    # Through an encoded file too, where the format can hold the mode.
    for fmt in ("PNG", "TIFF"):
        buffer = io.BytesIO()
        try:
            img.save(buffer, fmt)
        except (OSError, ValueError, KeyError):
            continue
        decoded = Image.open(io.BytesIO(buffer.getvalue()))
        worst = float(np.abs(PREPROCESS([buffer.getvalue()])[0] - want).max()) / LEVEL
        assert worst <= tolerance + 1e-3, f"{mode} as {fmt} (decoded as {decoded.mode}): off by {worst:.1f} levels"


def test_a_16_bit_png_file_is_scaled_not_clipped_to_white(tmp_path):
    grey = grey_picture()
    path = tmp_path / "deep.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(load_image(path)), grey)


def test_a_float_picture_on_the_0_to_1_scale_is_refused_not_embedded_black():
    img = Image.fromarray(grey_picture().astype(np.float32) / 255)
    with pytest.raises(InputError, match=r"0\.\.1.*scale it to 0\.\.255"):
        PREPROCESS([img])


@pytest.mark.parametrize(
    "values,fragment",
    [
        (np.full((4, 4), 300, np.float32), "outside 0..255"),
        (np.full((4, 4), -1, np.float32), "outside 0..255"),
        (np.full((4, 4), np.inf, np.float32), "NaN or infinity"),
        (np.full((4, 4), np.nan, np.float32), "NaN or infinity"),
    ],
)
def test_a_float_image_outside_0_to_255_gets_the_float_array_advice(values, fragment):
    with pytest.raises(InputError, match=fragment) as from_image:
        load_image(Image.fromarray(values))
    with pytest.raises(InputError) as from_array:
        load_image(values)
    advice = "scale it to 0..255 and cast with .astype(np.uint8)"
    assert advice in str(from_image.value) and advice in str(from_array.value)


def test_a_32_bit_integer_image_beyond_16_bits_is_refused():
    with pytest.raises(InputError, match=r"mode I.*0\.\.70000"):
        load_image(Image.fromarray(np.array([[0, 70000]], np.int32)))


@pytest.mark.parametrize("mode", ["La", "PA", "RGBa"])
def test_premultiplied_alpha_modes_load_in_both_convert_orders(mode):
    img, picture, _ = make(mode)
    for convert in ("before", "after"):
        spec = PreprocessSpec(24, SPEC.mean, SPEC.std, crop="resize_then_crop", convert=convert)
        out = ImagePreprocessor(spec)([img])[0]
        np.testing.assert_allclose(out, ImagePreprocessor(spec)([picture])[0], atol=1e-6)


def test_eps_is_never_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\nshowpage\n"
    with pytest.raises(InputError, match="cannot decode"):
        load_image(eps)


@pytest.mark.parametrize("mode", ["I", "I;16", "I;16B"])
def test_wide_integer_images_of_8_bit_values_are_taken_as_8_bit_as_pillow_reads_them(mode):
    """Image.fromarray(int32 array of 0..255) is mode I: dividing it by 257 would embed a black picture."""
    grey = grey_picture()
    dtype = {"I": np.int32, "I;16": "<u2", "I;16B": ">u2"}[mode]
    img = (
        Image.frombytes(mode, (24, 24), grey.astype(dtype).tobytes())
        if mode != "I"
        else Image.fromarray(grey.astype(dtype))
    )
    assert img.mode == mode
    np.testing.assert_array_equal(np.asarray(load_image(img)), grey)
    # What the reference pipelines get from Pillow for the same image, since nothing clips here.
    np.testing.assert_array_equal(np.asarray(img.convert("RGB"))[:, :, 0], grey)
    np.testing.assert_allclose(PREPROCESS([img])[0], PREPROCESS([grey])[0], atol=1e-6)


def test_a_wide_integer_image_with_one_value_over_255_is_16_bit():
    values = grey_picture().astype(np.int32) * 257
    values[0, 0] = 256  # the darkest pixel of a 16-bit picture may well be above 255
    np.testing.assert_array_equal(np.asarray(load_image(Image.fromarray(values)))[1:, 1:], grey_picture()[1:, 1:])


def test_a_16_bit_ppm_file_is_mode_i_and_scaled(tmp_path):
    grey = grey_picture()
    path = tmp_path / "deep.pgm"
    header = b"P5 24 24 65535\n"
    path.write_bytes(header + (grey.astype(">u2") * 257).tobytes())
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(path)), grey)


# --- rounding, on values that tell the rules apart ---------------------------------------------------------------

# 16-bit values either side of rounding points: v = 257k + 128 and 257k + 129 straddle v / 257 = k + 0.5 (257 is odd,
# so there is no tie), the midpoint, and the two ends. 65535 makes the picture 16-bit.
WIDE = [0, 128, 129, 255, 256, 385, 386, 32767, 32768, 65406, 65407, 65535]
# The 8-bit level each shows: the nearest integer to v / 257, worked out by hand.
WIDE_LEVELS = [0, 0, 1, 1, 1, 1, 2, 127, 128, 254, 255, 255]


def _wide(mode: str, values) -> Image.Image:
    array = np.array([values], np.int64)
    if mode == "I":
        return Image.fromarray(array.astype(np.int32))
    dtype = {"I;16": "<u2", "I;16B": ">u2"}[mode]
    return Image.frombytes(mode, (array.shape[1], 1), array.astype(dtype).tobytes())


@pytest.mark.parametrize("mode", ["I", "I;16", "I;16B"])
def test_16_bit_values_round_to_the_nearest_8_bit_level(mode):
    img = _wide(mode, WIDE)
    assert img.mode == mode
    assert np.asarray(load_image(img))[0].tolist() == WIDE_LEVELS
    assert [round(v / 257) for v in WIDE] == WIDE_LEVELS  # the hand table is the nearest level


def test_a_16_bit_png_of_odd_values_rounds_the_same(tmp_path):
    path = tmp_path / "odd.png"
    Image.fromarray(np.array([WIDE], np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    assert np.asarray(load_image(path))[0].tolist() == WIDE_LEVELS
    picture = np.repeat(np.array([WIDE_LEVELS], np.uint8)[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(PREPROCESS([path.read_bytes()]), PREPROCESS([picture]))


@pytest.mark.parametrize(
    "values,levels",
    [
        ([0, 128, 255], [0, 128, 255]),  # everything fits 0..255: 8-bit, as Pillow reads it
        ([0, 128, 255, 256], [0, 0, 1, 1]),  # one value past 255: the whole picture is 16-bit
        ([0, 255, 65535], [0, 1, 255]),
    ],
    ids=["max 255", "max 256", "max 65535"],
)
def test_where_8_bit_ends_and_16_bit_begins(values, levels):
    for mode in ("I", "I;16"):
        assert np.asarray(load_image(_wide(mode, values)))[0].tolist() == levels, mode


@pytest.mark.parametrize("value", [-1, 65536])
def test_wide_values_outside_0_to_65535_are_refused(value):
    with pytest.raises(InputError, match=rf"mode I image with values {min(0, value)}\.\.{max(255, value)}"):
        load_image(_wide("I", [0, 255, value]))


def test_float_values_round_to_the_nearest_level_ties_to_even():
    values = [0.4, 0.5, 0.6, 1.5, 2.5, 2.51, 127.5, 128.5, 254.49, 254.5, 254.51, 255.0]
    # Hand-worked: nearest level, and an exact .5 goes to the even neighbour (NumPy's rint, IEEE's default).
    levels = [0, 0, 1, 2, 2, 3, 128, 128, 254, 254, 255, 255]
    img = Image.fromarray(np.array([values], np.float32))
    assert img.mode == "F"
    assert np.asarray(load_image(img))[0].tolist() == levels


@pytest.mark.parametrize(
    "values,levels",
    [
        ([0.0, 0.0], [0, 0]),  # all black: nothing says 0..1
        ([0.0, 1.0], None),  # max exactly 1: a picture scaled to 0..1
        ([0.0, 1.001], [0, 1]),  # just above 1: the 0..255 scale
        ([0.0, 255.0], [0, 255]),
        ([0.0, 255.01], None),
        ([-0.01, 128.0], None),
    ],
)
def test_the_ends_of_the_float_range(values, levels):
    img = Image.fromarray(np.array([values], np.float32))
    if levels is not None:
        assert np.asarray(load_image(img))[0].tolist() == levels
    else:
        with pytest.raises(InputError, match=r"0\.\.1|outside 0\.\.255"):
            load_image(img)
