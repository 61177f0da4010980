"""How a dataset job runs, as one frozen options object: the CLI builds it and ``embed_dataset`` takes it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from clip_onnx.batch.pipeline import MAX_FILE_BYTES
from clip_onnx.errors import InputError
from clip_onnx.registry import BACKEND_CHOICES
from clip_onnx.runtime.preprocess import DECODES


@dataclass(frozen=True)
class EmbedOptions:
    """One run of ``embed_dataset``: the tower and output format, batching, workers, resume, limits, backend.

    ``tower`` None follows the input (texts or images); "both" embeds each sample of webdataset shards
    into an image and a text column. ``fmt`` None follows ``out``'s name (``.npy`` or parquet). Work is
    committed every ``part_size`` items; ``resume`` continues a stopped run. Image files (and shards'
    members) are read only if they are regular files of at most ``max_file_bytes`` (None: no limit).
    ``workers`` None is one per core. ``backend`` is a name of ``clip_onnx.registry.BACKEND_CHOICES``.
    ``decode`` "draft" decodes JPEGs at libjpeg's reduced scales (``ClipModel.encode_image``'s option).
    """

    tower: str | None = None
    fmt: str | None = None
    batch_size: int = 32
    workers: int | None = None
    resume: bool = False
    part_size: int = 4096
    max_file_bytes: int | None = MAX_FILE_BYTES
    backend: str = "onnxruntime"
    decode: str = "exact"

    def __post_init__(self) -> None:
        optional = {"workers": self.workers, "max_file_bytes": self.max_file_bytes}
        sizes = {"batch_size": self.batch_size, "part_size": self.part_size}
        for name, value in {**sizes, **{k: v for k, v in optional.items() if v is not None}}.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an int >= 1, got {value!r}")
        if self.backend not in BACKEND_CHOICES:
            raise InputError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
        if self.decode not in DECODES:
            raise InputError(f"decode must be one of {', '.join(DECODES)}, got {self.decode!r}")

    @classmethod
    def from_keywords(cls, **keywords: Any) -> EmbedOptions:
        """The keyword API of clip-onnx 0.1 (``batch_size=``, ``resume=``, ...) as options."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(keywords) - known)
        if unknown:
            raise TypeError(f"unexpected embed option(s) {unknown}; known: {sorted(known)}")
        return cls(**keywords)
