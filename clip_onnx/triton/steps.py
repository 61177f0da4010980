"""The work of clip-onnx's Python models inside Triton.

Runs in the server's Python, so it imports only ``clip_onnx.runtime`` and
NumPy (no torch, no tritonclient); ``step_model.py`` wraps it for Triton's
Python backend.  A step takes the batches of the requests Triton hands over
together (each a [N, 1] array) and returns, per request, its output arrays by
name or the InputError that fails that request alone.

- The ensemble layout's steps (``tokenize``, ``preprocess``) read the manifest
  and tokenizer from their version folder and feed a graph model.
- The python layout's models (``image``, ``text``, ``classify``) open the bundle
  in one place, :func:`open_model`, through ``ClipModel.load`` /
  ``ClipClassifier.load``, and run the graph on all requests' items at once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clip_onnx.bundle import MANIFEST
from clip_onnx.errors import BundleError, InputError
from clip_onnx.files import sha256_file
from clip_onnx.manifest import Manifest
from clip_onnx.runtime import ClipClassifier, ClipModel
from clip_onnx.runtime.preprocess import ImagePreprocessor
from clip_onnx.runtime.tokenizers import load_tokenizer

log = logging.getLogger(__name__)

Result = dict[str, np.ndarray] | InputError
Step = Callable[[Sequence[np.ndarray]], list[Result]]
MODELS = ("image", "text", "classify")
# The optional output of the text models: how many tokens the graph saw of each text (written since 0.2).
TOKENS = "TOKENS"
ENSEMBLE_STEPS = ("tokenize", "preprocess")


def open_step(kind: str, version_dir: Path, outputs: Sequence[str], settings: Mapping[str, Any] | None = None) -> Step:
    """The step or model ``kind`` for the model whose version folder is ``version_dir``, producing ``outputs``.

    ``settings`` (python layout): ``bundle`` (default: ``version_dir/bundle``), ``threads`` (0: a share of the
    cores), ``instances`` and ``max_batch``, as the model's config says.
    """
    settings = dict(settings or {})
    if kind in MODELS:
        bundle = Path(settings.get("bundle") or Path(version_dir) / "bundle")
        threads = session_threads(int(settings.get("threads") or 0), int(settings.get("instances") or 1))
        model = open_model(kind, bundle, threads, int(settings.get("max_batch") or 32))
        return {"image": EncodeImages, "text": EncodeTexts, "classify": ClassifyImages}[kind](model, list(outputs))
    if kind in ENSEMBLE_STEPS:
        step = {"tokenize": Tokenize, "preprocess": Preprocess}[kind](Path(version_dir), list(outputs))
        return each_request(step)
    raise BundleError(f"unknown clip-onnx step {kind!r}; this clip-onnx has {sorted(MODELS + ENSEMBLE_STEPS)}")


def open_model(kind: str, bundle: Path, threads: int, max_batch: int) -> ClipModel | ClipClassifier:
    """The one place a served model is opened: the tower it serves, its files' sha256 checked."""
    log.info("opening %s for %s requests with %d ONNX Runtime thread(s)", bundle, kind, threads)
    if kind == "classify":
        return ClipClassifier.load(bundle, batch_size=max_batch, threads=threads)
    tower = "visual" if kind == "image" else "textual"
    return ClipModel.load(bundle, towers=(tower,), threads=threads, batch_size=max_batch)


def session_threads(threads: int, instances: int) -> int:
    """``threads``, or (0) this process's cores shared among the model's instances."""
    if threads > 0:
        return threads
    return max(1, len(os.sched_getaffinity(0)) // max(1, instances))


def each_request(step: Callable[[np.ndarray], dict[str, np.ndarray]]) -> Step:
    """A step applied to each request's batch on its own: a bad item fails only its request."""

    def run(batches: Sequence[np.ndarray]) -> list[Result]:
        results: list[Result] = []
        for batch in batches:
            try:
                results.append(step(batch))
            except InputError as exc:
                results.append(exc)
        return results

    return run


class _Batched:
    """Prepares each request on its own, then runs the graph once on every good request's items.

    ``outputs`` are the model config's output names: the first is the graph's (EMBEDDING or LOGITS), and a
    text model written since 0.2 also has TOKENS.
    """

    def __init__(self, model, outputs: list[str]):
        self.model = model
        self.outputs = outputs

    def prepare(self, batch: np.ndarray):
        raise NotImplementedError

    def run(self, prepared: list) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __call__(self, batches: Sequence[np.ndarray]) -> list[Result]:
        results: list[Any] = []
        for batch in batches:
            try:
                results.append(self.prepare(batch))
            except InputError as exc:
                results.append(exc)
        good = [i for i, r in enumerate(results) if not isinstance(r, InputError)]
        if not good:
            return results
        try:
            merged = self.run([results[i] for i in good])
        except InputError as exc:
            if len(good) == 1:
                results[good[0]] = exc
                return results
            # Something only the graph's feed refuses: run each request alone to fail only its own.
            return [r if isinstance(r, InputError) else self([b])[0] for r, b in zip(results, batches, strict=True)]
        start = 0
        for i in good:
            end = start + len(results[i])
            results[i] = {name: array[start:end] for name, array in merged.items()}
            start = end
        return results


class EncodeImages(_Batched):
    """Encoded image files -> unit-length image embeddings, as ``ClipModel.encode_image``."""

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        return self.model.preprocess([_as_bytes(item) for item in batch.reshape(-1)])

    def run(self, prepared: list) -> dict[str, np.ndarray]:
        return {self.outputs[0]: self.model.encode_pixels(np.concatenate(prepared))}


class ClassifyImages(EncodeImages):
    """Encoded image files -> class logits, as ``ClipClassifier.logits``."""

    def run(self, prepared: list) -> dict[str, np.ndarray]:
        return {self.outputs[0]: self.model.logits_from_pixels(np.concatenate(prepared))}


class EncodeTexts(_Batched):
    """UTF-8 texts -> unit-length text embeddings, as ``ClipModel.encode_text`` (which tokenizes), and TOKENS."""

    def prepare(self, batch: np.ndarray) -> list[str]:
        return decode_texts(batch)

    def run(self, prepared: list) -> dict[str, np.ndarray]:
        texts = [text for texts in prepared for text in texts]
        out = {self.outputs[0]: self.model.encode_text(texts)}
        if TOKENS in self.outputs:
            out[TOKENS] = token_column(self.model.tokenize, texts)
        return out


def token_column(tokenizer, texts: list[str]) -> np.ndarray:
    """TOKENS: int32 ``[n, 1]``, the tokens the textual graph sees of each text."""
    return tokenizer.token_counts(texts).astype(np.int32).reshape(-1, 1)


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
        texts = decode_texts(batch)
        feed = self.tokenize(texts)
        if TOKENS in self.outputs:
            feed[TOKENS] = token_column(self.tokenize, texts)
        return {name: feed[name] for name in self.outputs}


class Preprocess:
    """Encoded image files -> the image graph's pixels, through the bundle's own preprocessing."""

    def __init__(self, version_dir: Path, outputs: list[str]):
        manifest = read_manifest(version_dir)
        self.preprocess = ImagePreprocessor(manifest.preprocess)
        (self.output,) = outputs

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {self.output: self.preprocess([_as_bytes(item) for item in batch.reshape(-1)])}


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
