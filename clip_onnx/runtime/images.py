"""Turn the image inputs the runtime accepts into decoded PIL images, without torch.

EXIF orientation is deliberately NOT applied: the reference pipelines
(RuCLIP's RuCLIPProcessor, open_clip) hand ``Image.open(...)`` straight to
their transforms without ``ImageOps.exif_transpose``, so rotating here would
make our embeddings disagree with theirs for every phone photo.

High-bit-depth and float images DO deviate from the references on purpose:
Pillow's ``convert("RGB")``, which they call, clips a 16-bit picture to white
and a 0..1 float picture to black.  ``load_image`` scales 16-bit modes to 8
bits (divide by 257) and takes float images on the 0..255 scale, refusing
values outside it, so every image is embedded as the picture it shows.

The rule for integer modes wider than 8 bits (I, I;16...) is decided by the
values, because the mode alone does not say the scale: ``Image.fromarray`` of
an int32 array of 0..255 data gives mode I, and so does a 16-bit PPM.  Values
that all fit 0..255 are taken as 8-bit, exactly as Pillow and the references
read them; any value above 255 makes it a 16-bit picture, scaled by 1/257
(where the references would clip it to white).  So 0..255 data is never
divided into a near-black picture, and the deviation is confined to pictures
the references cannot show.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from clip_onnx.errors import InputError
from clip_onnx.files import NotRegularFileError, open_regular

ImageLike = Image.Image | str | os.PathLike | bytes | bytearray | memoryview | np.ndarray

# Kinds that are one image on their own; callers that want a batch use this to
# refuse a bare image instead of iterating over its bytes or rows.
SINGLE_IMAGE_TYPES = (Image.Image, str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)


def check_image_batch(images: Any) -> list[Any]:
    """``images`` as a list of single images, or InputError: the one rule of what a batch of images is.

    A list (or any iterable) of images is a batch, and so is a stacked uint8 array [N, H, W, 3]; a bare
    image (a path, bytes, a PIL image, an H x W x 3 array) is refused rather than iterated over.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if images is None or isinstance(images, SINGLE_IMAGE_TYPES):
        raise InputError(f"expected a list of images, got a single {type(images).__name__}; wrap it in a list: [image]")
    try:
        items = list(images)
    except TypeError:
        raise InputError(f"expected a list of images, got {type(images).__name__} {images!r:.60}") from None
    if not items:
        raise InputError("expected at least one image, got an empty list")
    return items


# Pillow's own failure modes while identifying or decoding: unidentified and
# truncated files are OSError; some plugins raise ValueError, EOFError or
# SyntaxError on malformed headers.
_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
# Formats never opened from untrusted input: Pillow's EPS plugin runs Ghostscript on the file.
_REFUSED_FORMATS = frozenset({"EPS"})
# Modes with premultiplied alpha, which Pillow cannot convert to RGB directly, and their straight-alpha twins.
_STRAIGHT_ALPHA = MappingProxyType({"La": "LA", "RGBa": "RGBA", "PA": "RGBA"})
# Pillow's 16-bit and 32-bit integer greyscale modes; 16-bit PNGs and TIFFs open as one of them.
_WIDE_INT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# The advice every float input gets, arrays and mode-F images alike.
FLOAT_ADVICE = "scale it to 0..255 and cast with .astype(np.uint8)"


class Drafted(NamedTuple):
    """What ``load_drafted`` did to a JPEG: its full size, and the libjpeg scale (2, 4 or 8) it was decoded at.

    The decoded image is ``ceil(size / scale)`` pixels: its last row and column
    cover less of the picture than the others, so geometry works in the full
    size's coordinates divided by ``scale`` (as Pillow's ``thumbnail`` does).
    """

    size: tuple[int, int]
    scale: int


def load_image(obj: ImageLike) -> Image.Image:
    """Return ``obj`` as a fully decoded PIL image that holds no open file.

    Accepts a PIL image, a path (str or os.PathLike), encoded bytes, or a
    uint8 array shaped HxW, HxWx1, HxWx3 or HxWx4. Raises InputError naming
    the bad value for anything else and for anything that cannot be decoded.
    """
    return load_drafted(obj, None)[0]


def load_drafted(obj: ImageLike, side: int | None) -> tuple[Image.Image, Drafted | None]:
    """``load_image``, letting a JPEG file or JPEG bytes decode at a reduced scale.

    libjpeg decodes at the smallest of 1/2, 1/4 and 1/8 that keeps both sides at
    least ``side`` pixels (Pillow's ``Image.draft``): far faster for pictures much
    larger than that, and no longer the exact pixels.  Returns the image and
    how it was reduced, or None where it was not (``side`` None, another format,
    a picture too small to reduce, a PIL image or an array).
    """
    if isinstance(obj, Image.Image):
        with _decode_errors("the PIL image"):
            obj.load()  # a lazily opened image may still fail to decode
        return to_eight_bit(_check_size(obj, "the PIL image"), "the PIL image"), None
    if isinstance(obj, (str, os.PathLike)):
        what = f"image file {str(obj)!r}"
        with _open_file(obj, what) as file:
            return _open(file, what, side)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _open(io.BytesIO(obj), f"image bytes of length {memoryview(obj).nbytes}", side)
    if isinstance(obj, np.ndarray):
        return _from_array(obj), None
    raise InputError(
        f"cannot load an image from {type(obj).__name__}; expected a PIL image, a path, "
        "encoded bytes or a uint8 HxWx3 array"
    )


def _open_file(path: str | os.PathLike, what: str):
    """The image file at ``path``, opened only if it is a regular file (a FIFO would block forever)."""
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise InputError(f"{what} does not exist") from None
    except NotRegularFileError as exc:
        raise InputError(f"{what} is {exc.kind}, not a regular file") from None
    except PermissionError:
        raise InputError(f"cannot read {what}: permission denied") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise InputError(f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}") from None


def _open(source, what: str, side: int | None = None) -> tuple[Image.Image, Drafted | None]:
    drafted = None
    with _decode_errors(what):
        # Leaving the with-block closes the file; load() has already copied the
        # pixels into memory, so the returned image outlives the handle.
        with Image.open(source, formats=_allowed_formats()) as img:
            _check_bomb(img, what)  # on the full size: a drafted bomb is refused all the same
            size = img.size
            # JPEG only (None for other formats); a scale of 1 is the exact decode.
            if side is not None and img.draft(None, (side, side)) is not None and img.size != size:
                drafted = Drafted(size, -(-size[0] // img.size[0]))
            img.load()  # Image.open is lazy; a truncated file only fails here
    return to_eight_bit(_check_size(img, what), what), drafted


def _allowed_formats() -> list[str]:
    Image.init()  # registers every plugin once; cheap afterwards
    return [f for f in Image.OPEN if f not in _REFUSED_FORMATS]


def to_eight_bit(img: Image.Image, what: str) -> Image.Image:
    """``img`` in a mode whose ``convert("RGB")`` keeps the picture it shows.

    Wide integer modes are 8-bit when every value fits 0..255 and 16-bit (divided
    by 257: 65535 -> 255) otherwise; float images are taken on the 0..255 scale,
    and premultiplied alpha becomes straight alpha; other modes pass.
    """
    if img.mode in _STRAIGHT_ALPHA:
        return img.convert(_STRAIGHT_ALPHA[img.mode])
    if img.mode in _WIDE_INT_MODES:
        values = np.asarray(img).astype(np.int64)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise InputError(
                f"{what} is a mode {img.mode} image with values {low}..{high}; only 8-bit "
                "values 0..255 and 16-bit values 0..65535 are understood: scale it to 0..255 "
                "and convert it to mode L"
            )
        eight_bit = values if high <= 255 else (values + 128) // 257
        return Image.fromarray(eight_bit.astype(np.uint8))
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float32)
        _check_float_range(values, f"{what} (mode F)")
        return Image.fromarray(np.rint(values).astype(np.uint8))
    return img


def _check_float_range(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise InputError(f"{what} contains NaN or infinity; {FLOAT_ADVICE}")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 255:
        raise InputError(f"{what} has values {low:g}..{high:g} outside 0..255; {FLOAT_ADVICE}")
    # A picture scaled to 0..1 would pass the range check and embed as a black one.
    if 0 < high <= 1:
        raise InputError(
            f"{what} has values {low:g}..{high:g}, a picture scaled to 0..1 (it would embed as black); {FLOAT_ADVICE}"
        )


@contextmanager
def _decode_errors(what: str) -> Iterator[None]:
    """Turn Pillow's failures while opening or decoding into InputError naming ``what``."""
    try:
        yield
    except InputError:
        raise  # already ours; InputError is a ValueError and must not be re-wrapped
    except FileNotFoundError:
        raise InputError(f"{what} does not exist") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"cannot decode {what}: empty or not in an image format Pillow recognises") from None
    except _BOMB_ERRORS as exc:
        raise InputError(f"refusing {what}: too large to decode safely: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise InputError(f"cannot decode {what}: {exc}") from None
    except Exception as exc:  # Pillow's plugins raise assorted types (struct.error, IndexError...) on malformed files
        raise InputError(f"cannot decode {what}: {type(exc).__name__}: {exc}") from None


def _check_bomb(img: Image.Image, what: str) -> None:
    """Refuse images over Pillow's pixel limit before decoding a single pixel.

    Image.open only *warns* between MAX_IMAGE_PIXELS and twice that, and the
    warning cannot be turned into an error locally without touching the
    process-wide (and thread-unsafe) warning filters, so we repeat the check.
    """
    limit = Image.MAX_IMAGE_PIXELS
    pixels = img.width * img.height
    if limit is not None and pixels > limit:
        raise InputError(
            f"refusing {what}: {img.width}x{img.height} = {pixels} pixels is too large to decode safely, "
            f"over Pillow's decompression-bomb limit of {limit}"
        )


def _check_size(img: Image.Image, what: str) -> Image.Image:
    if img.width == 0 or img.height == 0:
        raise InputError(f"{what} has zero size {img.width}x{img.height}")
    return img


def _from_array(arr: np.ndarray) -> Image.Image:
    what = f"array of shape {arr.shape} and dtype {arr.dtype}"
    if arr.dtype.kind in "fc" and np.isnan(arr).any():
        raise InputError(f"{what} contains NaN; {FLOAT_ADVICE}")
    if arr.dtype != np.uint8:
        raise InputError(f"{what} is not uint8; {FLOAT_ADVICE}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise InputError(f"{what} is not HxW, HxWx1, HxWx3 or HxWx4")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what} is empty")
    # fromarray may share the buffer (for L and RGBA); the copy makes the image
    # independent of later edits to the caller's array.
    return Image.fromarray(np.array(arr, order="C", copy=True))
