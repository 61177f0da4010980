"""How a model wants its pixels, as data: the manifest's ``preprocess`` section, read into a frozen spec.

Dependency-free (no Pillow, no NumPy), so the manifest can parse it without the
runtime; ``clip_onnx.runtime.preprocess`` maps the names here to Pillow filters
and crop functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from clip_onnx.errors import BundleError, InputError

__all__ = ["CLIP_MEAN", "CLIP_STD", "CROP_MODE_NAMES", "INTERPOLATION_NAMES", "MAX_IMAGE_SIDE", "PreprocessSpec"]

# OpenAI CLIP's normalisation, which RuCLIP and Chinese-CLIP reuse: the one copy of these numbers.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# The largest output side a spec may ask for.
MAX_IMAGE_SIDE = 8192
# torchvision's InterpolationMode names (the runtime maps each to the Pillow filter torchvision uses).
INTERPOLATION_NAMES = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
# The geometries the runtime implements (``clip_onnx.runtime.preprocess.CROP_MODES``).
CROP_MODE_NAMES = ("crop_then_resize", "resize_then_crop", "squash_then_crop")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model expects its pixels: output size, crop geometry, filter and normalisation.

    ``crop`` is one of CROP_MODES. ``resize_size`` is the shortest-side target
    of "resize_then_crop" and the square side of "squash_then_crop" (None means
    ``image_size``); "crop_then_resize" ignores it.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop: str = "crop_then_resize"
    resize_size: int | None = None
    # When the reference converts to RGB: "before" the geometry (RuCLIP) or "after" it
    # (open_clip's transform resizes and crops in the image's own mode, then converts).
    convert: str = "before"

    def __post_init__(self) -> None:
        # Accept lists (as JSON gives them) but store tuples so the spec stays hashable.
        object.__setattr__(self, "mean", _triple("mean", self.mean, positive=False))
        object.__setattr__(self, "std", _triple("std", self.std, positive=True))
        _check_size("image_size", self.image_size)
        if self.resize_size is not None:
            _check_size("resize_size", self.resize_size)
        # Membership tests first need a str: a list from JSON would raise TypeError (unhashable).
        if not isinstance(self.interpolation, str) or self.interpolation not in INTERPOLATION_NAMES:
            raise InputError(
                f"unknown interpolation {self.interpolation!r}; expected one of {sorted(INTERPOLATION_NAMES)}"
            )
        if not isinstance(self.crop, str) or self.crop not in CROP_MODE_NAMES:
            raise InputError(f"unknown crop mode {self.crop!r}; expected one of {sorted(CROP_MODE_NAMES)}")
        if not isinstance(self.convert, str) or self.convert not in ("before", "after"):
            raise InputError(f"unknown convert order {self.convert!r}; expected 'before' or 'after'")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessSpec:
        """Build a spec from ``to_dict`` output, raising BundleError naming any bad key or value."""
        if not isinstance(d, Mapping):
            raise BundleError(f"preprocess spec must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise BundleError(f"preprocess spec has unknown keys {unknown}; expected a subset of {sorted(known)}")
        missing = sorted(f.name for f in fields(cls) if f.name not in d and f.default is MISSING)
        if missing:
            raise BundleError(f"preprocess spec is missing keys {missing}")
        try:
            return cls(**d)
        except InputError as exc:
            raise BundleError(f"invalid preprocess spec: {exc}") from None


def _check_size(name: str, value: object) -> None:
    # bool is an int subclass; True as a size is always a mistake.  A side over MAX_IMAGE_SIDE is a
    # typo, or a hostile manifest's way to make every request allocate gigabytes.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_IMAGE_SIDE:
        raise InputError(f"{name} must be an int from 1 to {MAX_IMAGE_SIDE}, got {value!r}")


def _triple(name: str, value: Any, positive: bool) -> tuple[float, float, float]:
    if isinstance(value, (str, bytes)):
        # A string would be split into characters, so "123" would pass as (1, 2, 3).
        raise InputError(f"{name} must be three numbers, got {value!r}")
    try:
        items = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be three numbers, got {value!r}") from None
    if len(items) != 3 or not all(math.isfinite(v) for v in items):
        raise InputError(f"{name} must be three finite numbers, got {value!r}")
    if positive and min(items) <= 0:
        raise InputError(f"{name} must be positive, got {value!r}")
    return items[0], items[1], items[2]
