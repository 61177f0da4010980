"""load_image: every accepted input kind, every refused one, EXIF handling and file hygiene."""

from __future__ import annotations

import gc
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from clip_onnx.errors import InputError
from clip_onnx.runtime.images import load_image


def noise(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w, channels) if channels else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; enough for Image.open to size it up."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def rgb() -> Image.Image:
    return Image.fromarray(noise(12, 17))


@pytest.fixture
def png_path(tmp_path: Path, rgb: Image.Image) -> Path:
    path = tmp_path / "noise.png"
    rgb.save(path)
    return path


# --- accepted inputs -------------------------------------------------------


def test_pil_image_is_returned_loaded(rgb):
    out = load_image(rgb)
    assert out.size == (17, 12)
    assert np.array_equal(np.asarray(out), np.asarray(rgb))


@pytest.mark.parametrize("as_path", [str, Path], ids=["str", "pathlib"])
def test_path(png_path, rgb, as_path):
    out = load_image(as_path(png_path))
    assert np.array_equal(np.asarray(out), np.asarray(rgb))


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_encoded_bytes(rgb, wrap):
    data = bytearray(encode(rgb))
    out = load_image(wrap(data))
    data[:] = b"\0" * len(data)  # the decoded image must not depend on the caller's buffer
    assert np.array_equal(np.asarray(out), np.asarray(rgb))


@pytest.mark.parametrize(("shape", "mode"), [((9, 5, 3), "RGB"), ((9, 5), "L"), ((9, 5, 1), "L"), ((9, 5, 4), "RGBA")])
def test_uint8_arrays(shape, mode):
    arr = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = load_image(arr)
    assert out.mode == mode and out.size == (5, 9)
    assert np.array_equal(np.asarray(out), arr.reshape(np.asarray(out).shape))
    arr[...] = 0  # later edits to the array must not reach the image
    assert np.asarray(out).any()


def test_non_contiguous_array():
    arr = noise(10, 20)[:, ::2]
    assert np.array_equal(np.asarray(load_image(arr)), arr)


# --- refused inputs --------------------------------------------------------


@pytest.mark.parametrize("obj", [42, None, [1, 2, 3], {"a": 1}, 1.5])
def test_unsupported_type_names_the_type(obj):
    with pytest.raises(InputError, match=type(obj).__name__):
        load_image(obj)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(InputError, match="nope.jpg.*does not exist"):
        load_image(path)


def test_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_image(str(tmp_path))


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("definitely not pixels\n")
    with pytest.raises(InputError, match="notes.txt"):
        load_image(path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.png"):
        load_image(path)


def test_zero_bytes():
    with pytest.raises(InputError, match="bytes of length 0"):
        load_image(b"")


def test_garbage_bytes():
    with pytest.raises(InputError, match="bytes of length 5"):
        load_image(b"hello")


@pytest.fixture
def truncated_jpeg() -> bytes:
    data = encode(Image.fromarray(noise(64, 64)), "JPEG", quality=90)
    return data[: len(data) // 2]


def test_truncated_jpeg_bytes(truncated_jpeg):
    with pytest.raises(InputError, match=f"bytes of length {len(truncated_jpeg)}.*truncated"):
        load_image(truncated_jpeg)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_jpeg_file(tmp_path, truncated_jpeg):
    path = tmp_path / "cut.jpg"
    path.write_bytes(truncated_jpeg)
    with pytest.raises(InputError, match="cut.jpg.*truncated"):
        load_image(path)


def test_lazily_opened_truncated_pil_image(truncated_jpeg):
    lazy = Image.open(io.BytesIO(truncated_jpeg))  # opens fine, fails on decode
    with pytest.raises(InputError, match="PIL image.*truncated"):
        load_image(lazy)


def test_zero_size_pil_image():
    with pytest.raises(InputError, match="zero size 0x5"):
        load_image(Image.new("RGB", (0, 5)))


def test_decompression_bomb_over_twice_the_limit(tmp_path):
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None, "Pillow's limit must stay on"
    data = png_header_only(50_000, 50_000)
    with pytest.raises(InputError, match="refusing image bytes of length .*too large"):
        load_image(data)
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(InputError, match="bomb.png.*too large"):
        load_image(path)
    assert Image.MAX_IMAGE_PIXELS == limit


def test_decompression_bomb_between_limit_and_twice(monkeypatch):
    # Pillow only warns in this band; we must still refuse before decoding.
    data = encode(Image.fromarray(noise(40, 40)))  # 1600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(Image.DecompressionBombWarning):
        with pytest.raises(
            InputError, match="refusing image bytes of length .*: 40x40 = 1600 pixels is too large.*limit of 1000$"
        ):
            load_image(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(InputError, match="too large"):
            load_image(data)


@pytest.mark.parametrize(
    ("arr", "pattern"),
    [
        (np.zeros((4, 4, 3), np.float32), "float32"),
        (np.zeros((4, 4, 3), np.float64), "float64"),
        (np.zeros((4, 4, 3), np.uint16), "uint16"),
        (np.zeros((4, 4, 3), bool), "bool"),
        (np.zeros((4, 4, 5), np.uint8), r"\(4, 4, 5\)"),
        (np.zeros((4, 4, 2), np.uint8), r"\(4, 4, 2\)"),
        (np.zeros((1, 4, 4, 3), np.uint8), r"\(1, 4, 4, 3\)"),
        (np.zeros((7,), np.uint8), r"\(7,\)"),
        (np.zeros((0, 4, 3), np.uint8), r"\(0, 4, 3\).*empty"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    ],
    ids=["float32", "float64", "uint16", "bool", "5ch", "2ch", "4d", "1d", "empty", "nan"],
)
def test_bad_arrays(arr, pattern):
    with pytest.raises(InputError, match=pattern):
        load_image(arr)


def test_array_with_one_nan_is_reported_as_nan():
    arr = np.zeros((4, 4, 3), np.float32)
    arr[2, 1, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        load_image(arr)


# --- EXIF and file hygiene -------------------------------------------------


def test_exif_orientation_is_not_applied(tmp_path):
    # The reference pipelines never call exif_transpose, so neither do we.
    img = Image.fromarray(noise(20, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)

    out = load_image(path)
    with Image.open(path) as reference:
        assert reference.getexif().get(0x0112) == 6
        assert ImageOps.exif_transpose(reference).size == (20, 40)  # what rotating would give
        assert out.size == reference.size == (40, 20)
        assert np.array_equal(np.asarray(out), np.asarray(reference))


def _open_fds() -> int | None:
    fd_dir = "/proc/self/fd"
    return len(os.listdir(fd_dir)) if os.path.isdir(fd_dir) else None


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF"])
def test_file_is_closed_after_loading(tmp_path, fmt):
    path = tmp_path / f"img.{fmt.lower()}"
    Image.fromarray(noise(16, 16)).save(path, format=fmt)
    before = _open_fds()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        img = load_image(path)
        gc.collect()
    if before is not None:
        assert _open_fds() == before
    os.remove(path)  # would fail on Windows if a handle were still open
    assert img.convert("RGB").size == (16, 16)
    assert np.asarray(img).size > 0
