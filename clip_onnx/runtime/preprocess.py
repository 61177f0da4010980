"""Torch-free image preprocessing that reproduces the torchvision pipelines of the reference models.

Only the geometry runs in Pillow (the same calls torchvision makes on PIL
images, so the resampled pixels are identical); ToTensor and Normalize become
one float32 lookup table per channel, built with the exact operations
torchvision performs, so the output matches it bit for bit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image

from clip_onnx.errors import InputError
from clip_onnx.preprocess_spec import CLIP_MEAN, CLIP_STD, CROP_MODE_NAMES, INTERPOLATION_NAMES, PreprocessSpec
from clip_onnx.runtime.images import Drafted, check_image_batch, load_drafted

log = logging.getLogger(__name__)

# The spec's names are the types' own (PreprocessSpec carries the data; this module runs it).
__all__ = ["CLIP_MEAN", "CLIP_STD", "CROP_MODES", "DECODES", "INTERPOLATIONS", "ImagePreprocessor", "PreprocessSpec"]

# How JPEGs are decoded: "exact" (the pixels the exporter's parity proof is for) or "draft" (libjpeg's
# reduced scales, keeping twice the side the geometry resizes to; benchmarks/NOTES.md has its fidelity).
DECODES = ("exact", "draft")

# torchvision's InterpolationMode names and the Pillow filters it hands PIL images to.
INTERPOLATIONS: Mapping[str, Image.Resampling] = MappingProxyType(
    {name: Image.Resampling[name.upper()] for name in INTERPOLATION_NAMES}
)


def _crop_then_resize(img: Image.Image, spec: PreprocessSpec, drafted: Drafted | None = None) -> Image.Image:
    """RandomResizedCrop(size, scale=(1, 1), ratio=(1, 1)) made deterministic.

    With area and aspect ratio pinned to 1, every attempt asks for a square of
    side round(sqrt(w*h)). That fits only when the image is square (the whole
    image) or its sides differ by exactly one (a min-side square at a random
    offset 0 or 1, where we take 0); otherwise all ten attempts fail and the
    fallback is a min-side square at offset ((h - side) // 2, (w - side) // 2).
    All three cases are that same central square.
    """
    w, h = drafted.size if drafted else img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if drafted:  # the same square of the full picture, in the reduced image's coordinates
        s = drafted.scale
        x0, y0, x1, y1 = left / s, top / s, (left + side) / s, (top + side) / s
        # Cropped first, as the exact path crops, so that the filter stops at the square's edges.
        cut = (math.floor(x0), math.floor(y0), min(math.ceil(x1), img.width), min(math.ceil(y1), img.height))
        box = (x0 - cut[0], y0 - cut[1], x1 - cut[0], y1 - cut[1])
        return img.crop(cut).resize((spec.image_size, spec.image_size), INTERPOLATIONS[spec.interpolation], box=box)
    img = img.crop((left, top, left + side, top + side))
    return _resize(img, (spec.image_size, spec.image_size), spec)


def _resize_then_crop(img: Image.Image, spec: PreprocessSpec, drafted: Drafted | None = None) -> Image.Image:
    """Resize(resize_size) then CenterCrop(image_size), with torchvision's rounding and zero padding."""
    w, h = drafted.size if drafted else img.size
    target = spec.resize_size or spec.image_size
    # Same expression as torchvision so the long side truncates identically.
    if w <= h:
        new_w, new_h = target, int(target * h / w)
    else:
        new_w, new_h = int(target * w / h), target
    img = _resize(img, (new_w, new_h), spec, drafted)
    size = spec.image_size
    left, top = _center_offset(new_w, size), _center_offset(new_h, size)
    # PIL fills the part of the box outside the image with zeros, which is
    # exactly CenterCrop's pad-with-0 when the image is smaller than the crop.
    return img.crop((left, top, left + size, top + size))


def _squash_then_crop(img: Image.Image, spec: PreprocessSpec, drafted: Drafted | None = None) -> Image.Image:
    """Resize((resize_size, resize_size)), ignoring the aspect ratio, then CenterCrop(image_size).

    cn_clip's image_transform (no crop: resize_size is image_size) and timm's
    eval transform with crop_mode="squash" (resize_size = image_size / crop_pct).
    """
    target = spec.resize_size or spec.image_size
    img = _resize(img, (target, target), spec, drafted)
    size = spec.image_size
    left = _center_offset(target, size)
    return img.crop((left, left, left + size, left + size))


def _center_offset(length: int, crop: int) -> int:
    if crop > length:
        return -((crop - length) // 2)
    return int(round((length - crop) / 2.0))


def _resize(
    img: Image.Image, size: tuple[int, int], spec: PreprocessSpec, drafted: Drafted | None = None
) -> Image.Image:
    if drafted:  # the whole picture is the reduced image less part of its last row and column
        box = (0.0, 0.0, drafted.size[0] / drafted.scale, drafted.size[1] / drafted.scale)
        return img.resize(size, INTERPOLATIONS[spec.interpolation], box=box)
    # torchvision returns the image untouched when it already has the size.
    if img.size == size:
        return img
    return img.resize(size, INTERPOLATIONS[spec.interpolation])


CROP_MODES: Mapping[str, Callable[[Image.Image, PreprocessSpec, Drafted | None], Image.Image]] = MappingProxyType(
    {
        "crop_then_resize": _crop_then_resize,
        "resize_then_crop": _resize_then_crop,
        "squash_then_crop": _squash_then_crop,
    }
)
if set(CROP_MODES) != set(CROP_MODE_NAMES):  # the spec accepts exactly the geometries implemented here
    raise ImportError(f"crop modes {sorted(CROP_MODES)} differ from PreprocessSpec's {sorted(CROP_MODE_NAMES)}")


def _normalise_table(spec: PreprocessSpec) -> np.ndarray:
    """[3, 256] float32: what ToTensor then Normalize turn each uint8 value into, per channel.

    Mirrors torchvision's float32 steps: x.float().div(255), then
    .sub_(mean).div_(std) with mean and std cast to float32.
    """
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None]
    return np.ascontiguousarray((values[None, :] - mean) / std, dtype=np.float32)


class ImagePreprocessor:
    """Callable turning a list of images into the float32 [N, 3, S, S] batch a CLIP image tower takes."""

    def __init__(self, spec: PreprocessSpec) -> None:
        if not isinstance(spec, PreprocessSpec):
            raise InputError(f"expected a PreprocessSpec, got {type(spec).__name__}")
        self.spec = spec
        self._geometry = CROP_MODES[spec.crop]
        self._table = _normalise_table(spec)
        log.debug("image preprocessor for %s", spec)

    def __repr__(self) -> str:
        return f"ImagePreprocessor({self.spec!r})"

    def __call__(self, images: Iterable[Any], *, decode: str = "exact") -> np.ndarray:
        """float32 [N, 3, S, S]: the images decoded, cropped, resized and normalised.

        ``decode="draft"`` decodes JPEG files and bytes at a reduced scale (``draft_side``).
        """
        items = check_image_batch(images)
        draft = self.draft_side(decode)
        size = self.spec.image_size
        out = np.empty((len(items), 3, size, size), dtype=np.float32)
        for i, item in enumerate(items):
            pixels = self._numbered(item, i, draft)
            for c in range(3):
                np.take(self._table[c], pixels[:, :, c], out=out[i, c])
        return out

    def draft_side(self, decode: str) -> int | None:
        """The least side a JPEG keeps under ``decode`` (None: decoded exactly).

        "draft" keeps twice the side the geometry resizes the picture to, so the
        resampling filter still averages over real pixels.
        """
        if decode not in DECODES:
            raise InputError(f"decode must be one of {DECODES}, got {decode!r}")
        return 2 * max(self.spec.image_size, self.spec.resize_size or 0) if decode == "draft" else None

    def pixels(self, images: Iterable[Any]) -> np.ndarray:
        """uint8 [N, S, S, 3]: the first half of ``__call__``, the images after the geometric steps.

        With ``normalize`` it splits ``__call__`` in two, for callers that
        change the pixels in between (a training script's augmentations).
        """
        items = check_image_batch(images)
        return np.stack([self._numbered(item, i, None) for i, item in enumerate(items)])

    def one(self, image: Any, *, decode: str = "exact") -> np.ndarray:
        """float32 [3, S, S] for one image, with its InputError as it came (a dataset job names the item)."""
        return self.normalize(self._pixels(image, self.draft_side(decode)))

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [..., S, S, 3] -> float32 [..., 3, S, S]: the second half of ``__call__`` (ToTensor, Normalize)."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim < 3 or pixels.shape[-1] != 3:
            raise InputError(f"expected uint8 pixels [..., height, width, 3], got {pixels.dtype} {list(pixels.shape)}")
        out = np.empty((*pixels.shape[:-3], 3, *pixels.shape[-3:-1]), dtype=np.float32)
        for c in range(3):
            out[..., c, :, :] = np.take(self._table[c], pixels[..., c])
        return out

    def _numbered(self, item: Any, index: int, draft: int | None) -> np.ndarray:
        try:
            return self._pixels(item, draft)
        except InputError as exc:
            raise InputError(f"image #{index}: {exc}") from None

    def _pixels(self, item: Any, draft: int | None) -> np.ndarray:
        img, drafted = load_drafted(item, draft)
        # Converting RGB to RGB would only copy, so both orders skip it.
        if self.spec.convert == "before" and img.mode != "RGB":
            img = _to_rgb(img)
        img = self._geometry(img, self.spec, drafted)
        if img.mode != "RGB":
            img = _to_rgb(img)
        return np.asarray(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    try:
        return img.convert("RGB")
    except ValueError as exc:  # a mode some plugin added, which Pillow cannot convert
        raise InputError(f"a mode {img.mode} image cannot be converted to RGB ({exc}); convert it yourself") from None
