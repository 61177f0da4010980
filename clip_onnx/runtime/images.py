"""Turn the image inputs the runtime accepts into decoded PIL images, without torch.

EXIF orientation is deliberately NOT applied: the reference pipelines
(RuCLIP's RuCLIPProcessor, open_clip) hand ``Image.open(...)`` straight to
their transforms without ``ImageOps.exif_transpose``, so rotating here would
make our embeddings disagree with theirs for every phone photo.
"""
from __future__ import annotations

import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image

from clip_onnx.errors import InputError

ImageLike = Union[Image.Image, str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

# Kinds that are one image on their own; callers that want a batch use this to
# refuse a bare image instead of iterating over its bytes or rows.
SINGLE_IMAGE_TYPES = (Image.Image, str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)

# Pillow's own failure modes while identifying or decoding: unidentified and
# truncated files are OSError; some plugins raise ValueError, EOFError or
# SyntaxError on malformed headers.
_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def load_image(obj: ImageLike) -> Image.Image:
    """Return ``obj`` as a fully decoded PIL image that holds no open file.

    Accepts a PIL image, a path (str or os.PathLike), encoded bytes, or a
    uint8 array shaped HxW, HxWx1, HxWx3 or HxWx4. Raises InputError naming
    the bad value for anything else and for anything that cannot be decoded.
    """
    if isinstance(obj, Image.Image):
        with _decode_errors("the PIL image"):
            obj.load()  # a lazily opened image may still fail to decode
        return _check_size(obj, "the PIL image")
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        what = f"image file {str(path)!r}"
        if path.is_dir():
            raise InputError(f"{what} is a directory")
        return _open(path, what)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _open(io.BytesIO(obj), f"image bytes of length {memoryview(obj).nbytes}")
    if isinstance(obj, np.ndarray):
        return _from_array(obj)
    raise InputError(
        f"cannot load an image from {type(obj).__name__}; expected a PIL image, a path, "
        "encoded bytes or a uint8 HxWx3 array"
    )


def _open(source: Path | io.BytesIO, what: str) -> Image.Image:
    with _decode_errors(what):
        # Leaving the with-block closes the file; load() has already copied the
        # pixels into memory, so the returned image outlives the handle.
        with Image.open(source) as img:
            _check_bomb(img, what)
            img.load()  # Image.open is lazy; a truncated file only fails here
    return _check_size(img, what)


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
        raise InputError(f"{what} contains NaN")
    if arr.dtype != np.uint8:
        raise InputError(f"{what} is not uint8; scale it to 0..255 and cast with .astype(np.uint8)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise InputError(f"{what} is not HxW, HxWx1, HxWx3 or HxWx4")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what} is empty")
    # fromarray may share the buffer (for L and RGBA); the copy makes the image
    # independent of later edits to the caller's array.
    return Image.fromarray(np.array(arr, order="C", copy=True))
