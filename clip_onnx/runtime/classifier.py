"""ClipClassifier: a classifier bundle (one image graph producing class logits), without PyTorch.

timm's CLIP-ViT ImageNet classifiers export to such bundles: ``visual.onnx``
maps ``pixel_values`` to ``logits [batch, classes]`` and ``labels.txt`` names
the classes, one a line, in logit order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from clip_onnx.bundle import Bundle, open_bundle
from clip_onnx.errors import BundleError, InputError
from clip_onnx.runtime.backends import open_runner
from clip_onnx.runtime.backends.base import Runner
from clip_onnx.runtime.images import check_image_batch
from clip_onnx.runtime.model import check_batch_size, check_pixels, run_batches
from clip_onnx.runtime.preprocess import ImagePreprocessor
from clip_onnx.runtime.self_test import check_on_load
from clip_onnx.runtime.zero_shot import softmax

log = logging.getLogger(__name__)


class Prediction(NamedTuple):
    """What ``ClipClassifier.predict`` returns: per image, the best classes and their probabilities."""

    labels: list[list[str]]  # per image, the top_k class names, best first
    probs: np.ndarray  # float32 [N images, top_k]: softmax over all classes, best first
    indices: np.ndarray  # int64 [N images, top_k]: class indices into ``ClipClassifier.labels``


class ClipClassifier:
    """A classifier bundle (timm's CLIP-ViT ImageNet heads): class logits and top-k predictions for images.

    Open one with ``load``. Images may be paths, bytes, PIL images or uint8
    HxWx3 arrays, preprocessed as the manifest says and run ``batch_size`` at a
    time; ``labels`` names the classes in logit order.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        backend: str = "onnxruntime",
        providers: Sequence[Any] | None = None,
        batch_size: int = 32,
        threads: int | None = None,
    ):
        if not isinstance(bundle, Bundle):
            raise InputError(
                f"expected a Bundle, got {type(bundle).__name__}; open a directory with ClipClassifier.load"
            )
        if bundle.kind != "classifier":
            raise BundleError(f"{bundle.path} holds a {bundle.kind!r} model, not a classifier; open it with ClipModel")
        self.bundle = bundle
        self.batch_size = check_batch_size(batch_size)
        self.labels = _read_labels(bundle)
        self.preprocess = ImagePreprocessor(bundle.manifest.preprocess)
        self._visual = open_runner(bundle, "visual", backend, providers, threads)
        names = [spec.name for spec in self._visual.inputs]
        if names != ["pixel_values"]:
            raise BundleError(
                f"{bundle.path}: the visual graph takes inputs {names}, a classifier graph takes ['pixel_values']"
            )

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        backend: str = "onnxruntime",
        providers: Sequence[Any] | None = None,
        batch_size: int = 32,
        verify: bool = True,
        threads: int | None = None,
        self_test: bool | str = "auto",
    ) -> ClipClassifier:
        """Open a classifier bundle directory; ``verify`` checks every file's sha256 against the manifest.

        ``threads``: ONNX Runtime's intra-op threads (default: ``CLIP_ONNX_THREADS``, else one per core);
        ``self_test``: as for ``ClipModel.load``.
        """

        def build(bundle: Bundle) -> ClipClassifier:
            model = cls(bundle, backend=backend, providers=providers, batch_size=batch_size, threads=threads)
            check_on_load(model, self_test, backend)
            return model

        return open_bundle(path, build, verify=verify)

    def runners(self) -> dict[str, Runner]:
        return {"visual": self._visual}

    def raw_outputs(self, tower: str, items: Sequence[Any]) -> np.ndarray:
        """The logits of ``items`` (a classifier has the visual tower only): what the self-test compares."""
        return self.logits(items)

    def logits(self, images: Sequence[Any], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """float32 [N images, classes]: the graph's raw logits."""
        images = check_image_batch(images)
        return self._logits(images, lambda chunk: {"pixel_values": self.preprocess(chunk)}, progress)

    def logits_from_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        """``logits`` for pixels that ``preprocess`` already made: float32 [N, 3, S, S]."""
        check_pixels(pixel_values, self.preprocess.spec.image_size)
        return self._logits(pixel_values, lambda chunk: {"pixel_values": chunk}, None)

    def _logits(self, items: Any, feed: Callable[[Any], dict], progress: Callable[[int], None] | None) -> np.ndarray:
        out = run_batches(items, feed, self._visual, self.batch_size, progress)
        if out.shape[1] != len(self.labels):
            raise BundleError(
                f"{self.bundle.path}: the graph gives {out.shape[1]} logits but labels.txt names "
                f"{len(self.labels)} classes"
            )
        return out

    def predict(
        self, images: Sequence[Any], top_k: int = 5, progress: Callable[[int], None] | None = None
    ) -> Prediction:
        """The ``top_k`` most probable classes of each image, with softmax probabilities over all classes."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(self.labels):
            raise InputError(f"top_k must be an int from 1 to {len(self.labels)}, got {top_k!r}")
        probs = softmax(self.logits(images, progress=progress))
        # A stable sort keeps tied classes in index order, so equal inputs always rank the same way.
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        top = np.take_along_axis(probs, order, axis=1)
        return Prediction(
            labels=[[self.labels[i] for i in row] for row in order], probs=top, indices=order.astype(np.int64)
        )


def _read_labels(bundle: Bundle) -> list[str]:
    record = bundle.manifest.labels
    if record is None:
        raise BundleError(f"{bundle.path}: a classifier manifest needs labels.file naming the class-names file")
    path = bundle.file(record.file)
    try:
        labels = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read the class names {str(path)!r}: {exc}") from None
    if record.count is not None and len(labels) != record.count:
        raise BundleError(f"{path}: {len(labels)} class names, manifest says {record.count}")
    return labels
