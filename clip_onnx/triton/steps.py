"""The work of the Python step models inside Triton: tokenize, preprocess, normalise.

Runs in the server's Python, so it imports only ``clip_onnx.runtime`` and
NumPy (no torch, no tritonclient); ``step_model.py`` wraps it for Triton's
Python backend.  Each step takes one request's batch, a [N, 1] array as Triton
hands it over, and returns the output arrays by name, or raises InputError
for that request alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from clip_onnx.bundle import MANIFEST
from clip_onnx.errors import BundleError, InputError
from clip_onnx.files import sha256_file
from clip_onnx.manifest import Manifest
from clip_onnx.runtime.preprocess import ImagePreprocessor
from clip_onnx.runtime.tokenizers import load_tokenizer

Step = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def open_step(kind: str, version_dir: Path, outputs: Sequence[str]) -> Step:
    """The step ``kind`` reading its manifest and tokenizer from ``version_dir``, producing ``outputs``."""
    steps = {"tokenize": Tokenize, "preprocess": Preprocess, "normalize": Normalize}
    if kind not in steps:
        raise BundleError(f"unknown clip-onnx step {kind!r}; this clip-onnx has {sorted(steps)}")
    return steps[kind](Path(version_dir), list(outputs))


def read_manifest(version_dir: Path) -> Manifest:
    """The bundle's manifest as the step model carries it (the graphs themselves are other models' files)."""
    path = Path(version_dir) / MANIFEST
    try:
        return Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError) as exc:
        raise BundleError(
            f"{path}: unreadable manifest ({exc}); rewrite the repository with `clip-onnx triton`"
        ) from None


class Tokenize:
    """UTF-8 bytes -> the text graph's inputs, padded to the tokenizer's full context length.

    Every request gets the same width, so the dynamic batcher can merge any of them.
    """

    def __init__(self, version_dir: Path, outputs: list[str]):
        manifest = read_manifest(version_dir)
        spec = manifest.tokenizer
        if spec is None:
            raise BundleError(f"{version_dir}: the manifest has no tokenizer; this bundle has no text tower")
        # The copy must still be the tokenizer the graphs were exported and checked with.
        name = spec.file
        if sha256_file(Path(version_dir) / name) != manifest.sha256(name):
            raise BundleError(
                f"{Path(version_dir) / name}: sha256 does not match the manifest; "
                "rewrite the repository with `clip-onnx triton`"
            )
        self.tokenize = load_tokenizer(spec, Path(version_dir))
        self.outputs = outputs

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        feed = self.tokenize(decode_texts(batch))
        return {name: feed[name] for name in self.outputs}


class Preprocess:
    """Encoded image files -> the image graph's pixels, through the bundle's own preprocessing."""

    def __init__(self, version_dir: Path, outputs: list[str]):
        manifest = read_manifest(version_dir)
        self.preprocess = ImagePreprocessor(manifest.preprocess)
        (self.output,) = outputs

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {self.output: self.preprocess([_as_bytes(item) for item in batch.reshape(-1)])}


class Normalize:
    """Raw embeddings -> unit length, the same float32 operation as ``ClipModel``'s ``normalize=True``."""

    def __init__(self, version_dir: Path, outputs: list[str]):
        (self.output,) = outputs

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = batch.astype(np.float32, copy=False)
        return {self.output: batch / np.linalg.norm(batch, axis=-1, keepdims=True)}


def decode_texts(batch: np.ndarray) -> list[str]:
    """Triton's STRING items (bytes) as str, refusing invalid UTF-8 with the item's index and the bad byte."""
    texts = []
    for i, item in enumerate(batch.reshape(-1)):
        if isinstance(item, str):
            texts.append(item)
            continue
        try:
            texts.append(bytes(item).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(
                f"text #{i} is not valid UTF-8: byte {bytes(item)[exc.start : exc.start + 1]!r} at "
                f"position {exc.start} ({exc.reason}); send text encoded as UTF-8"
            ) from None
    return texts


def _as_bytes(item) -> bytes:
    # Triton hands STRING items over as bytes; a str would be taken for a file path by load_image.
    if isinstance(item, (bytes, bytearray, memoryview, np.bytes_)):
        return bytes(item)
    raise InputError(f"expected an encoded image file's bytes, got {type(item).__name__}")
