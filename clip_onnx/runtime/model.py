"""ClipModel: a bundle's two towers behind encode/similarity/classify, without PyTorch.

Thread-safe: tokenizers and preprocessors hold no per-call state and ONNX
Runtime sessions may be run from many threads at once.  A worker that only
embeds texts (or only images) can open just that tower: ``towers=("textual",)``
skips the other graph's loading, hashing and memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from clip_onnx.bundle import TOWERS, Bundle, open_bundle
from clip_onnx.errors import BundleError, InputError
from clip_onnx.runtime.backends import open_runner
from clip_onnx.runtime.backends.base import Runner
from clip_onnx.runtime.images import check_image_batch
from clip_onnx.runtime.preprocess import ImagePreprocessor
from clip_onnx.runtime.self_test import check_on_load
from clip_onnx.runtime.tokenizers import load_tokenizer
from clip_onnx.runtime.tokenizers.base import cut_padding
from clip_onnx.runtime.zero_shot import label_embeddings, zero_shot_probs
from clip_onnx.texts import check_templates, check_texts

log = logging.getLogger(__name__)

# ruclip.Predictor's default prompts; other families' manifests may carry their own.
RUCLIP_TEMPLATES = (
    "{}",
    "фото, на котором изображено {}",
    "изображение с {}",
    "картинка с {}",
    "фото с {}",
    "на фото видно {}",
)


class Classification(NamedTuple):
    """What ``ClipModel.classify`` returns: the labels, and per image a probability for each."""

    labels: list[str]
    probs: np.ndarray  # float32 [N images, len(labels)], rows sum to 1


class ClipModel:
    """A two-tower CLIP bundle: embeddings of images and texts, their similarity, and zero-shot classification.

    Open one with ``load``. Images may be paths, bytes, PIL images or uint8
    HxWx3 arrays; texts are strings. Work is split into batches of
    ``batch_size``; the tokenizer (``tokenize``, texts -> the textual graph's
    feed dict) and the image preprocessor (``preprocess``) come from the
    bundle's manifest, so the model sees exactly what the exporter checked.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        backend: str = "onnxruntime",
        providers: Sequence[Any] | None = None,
        batch_size: int = 32,
        towers: Sequence[str] = TOWERS,
        threads: int | None = None,
    ):
        if not isinstance(bundle, Bundle):
            raise InputError(f"expected a Bundle, got {type(bundle).__name__}; open a directory with ClipModel.load")
        if bundle.kind != "clip":
            raise BundleError(f"{bundle.path} holds a {bundle.kind!r} model, not a two-tower CLIP model")
        self.towers = _check_towers(towers)
        self.bundle = bundle
        self.batch_size = check_batch_size(batch_size)
        manifest = bundle.manifest
        assert manifest.tokenizer is not None and manifest.logit_scale is not None and manifest.embed_dim is not None
        self.logit_scale = manifest.logit_scale
        self.embed_dim = manifest.embed_dim
        self.tokenize = load_tokenizer(manifest.tokenizer, bundle.path)
        self.preprocess = ImagePreprocessor(manifest.preprocess)
        self.templates = manifest.templates or RUCLIP_TEMPLATES
        # A textual graph with a symbolic sequence axis runs on prompts trimmed to the
        # longest one in the batch: short prompts then cost less than the padded length.
        self._trim_seq = bundle.graph("textual").trimmable
        self._pad_id = self.tokenize.pad_id
        self._runners = {t: open_runner(bundle, t, backend, providers, threads) for t in self.towers}
        for tower, runner in self._runners.items():
            self._check_graph(tower, runner)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        backend: str = "onnxruntime",
        providers: Sequence[Any] | None = None,
        batch_size: int = 32,
        verify: bool = True,
        towers: Sequence[str] = TOWERS,
        threads: int | None = None,
        self_test: bool | str = "auto",
    ) -> ClipModel:
        """Open a bundle directory; ``verify`` checks the sha256 of every file it uses against the manifest.

        ``backend`` is "onnxruntime", "tensorrt" (plans from `clip-onnx build-engine`) or "auto".
        ``towers`` names the graphs to open: both by default, or only "textual" or "visual".
        ``threads`` sets ONNX Runtime's intra-op threads per session (default: ``CLIP_ONNX_THREADS``, else
        one per core); a pipeline that runs several batches at once from its own threads wants 1.
        ``self_test`` replays a few of the bundle's stored pictures and prompts on this machine and raises
        ``SelfTestError`` if the vectors stray from the exporter's: "auto" (the default) does where a
        lowered graph (fp16, int8), a TensorRT plan or a provider other than the CPU's runs.
        """
        towers = _check_towers(towers)
        check_batch_size(batch_size)

        def build(bundle: Bundle) -> ClipModel:
            model = cls(
                bundle, backend=backend, providers=providers, batch_size=batch_size, towers=towers, threads=threads
            )
            check_on_load(model, self_test, backend)
            return model

        return open_bundle(path, build, verify=verify, towers=towers)

    def encode_text(
        self, texts: Sequence[str], *, normalize: bool = True, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """float32 ``[len(texts), embed_dim]`` text embeddings, unit length unless ``normalize=False``.

        ``progress`` is called with the number of texts after each batch.
        Raises InputError for anything but a non-empty list of strings.
        """
        texts = check_texts(texts)
        return self._encode(texts, self._textual_feed, self._runner("textual"), normalize, progress)

    def encode_image(
        self,
        images: Sequence[Any],
        *,
        normalize: bool = True,
        progress: Callable[[int], None] | None = None,
        decode: str = "exact",
    ) -> np.ndarray:
        """float32 ``[len(images), embed_dim]`` image embeddings, unit length unless ``normalize=False``.

        ``progress`` is called with the number of images after each batch.
        ``decode="draft"`` decodes JPEG paths and bytes at libjpeg's reduced scales
        (``ImagePreprocessor.draft_side``): several times faster on photos far larger
        than the model's input, close to but not exactly the default "exact" vectors.
        Raises InputError naming the image that cannot be read.
        """
        images = check_image_batch(images)
        self.preprocess.draft_side(decode)  # refuses an unknown decode before any work

        def feed(chunk: list[Any]) -> dict[str, np.ndarray]:
            return {"pixel_values": self.preprocess(chunk, decode=decode)}

        return self._encode(images, feed, self._runner("visual"), normalize, progress)

    def encode_pixels(
        self, pixel_values: np.ndarray, *, normalize: bool = True, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """``encode_image`` for pixels that ``preprocess`` already made: float32 [N, 3, S, S].

        For pipelines that decode and preprocess on other threads than the one running the model.
        """
        check_pixels(pixel_values, self.preprocess.spec.image_size)
        return self._encode(
            pixel_values, lambda chunk: {"pixel_values": chunk}, self._runner("visual"), normalize, progress
        )

    def runners(self) -> dict[str, Runner]:
        """The open towers' runners by tower name."""
        return dict(self._runners)

    def raw_outputs(self, tower: str, items: Sequence[Any]) -> np.ndarray:
        """A tower's unnormalised outputs for images (visual) or texts (textual): what the self-test compares."""
        if tower == "visual":
            return self.encode_image(items, normalize=False)
        return self.encode_text(items, normalize=False)

    def _runner(self, tower: str) -> Runner:
        try:
            return self._runners[tower]
        except KeyError:
            raise InputError(
                f"this ClipModel was opened with towers={self.towers}; open it with {tower!r} among "
                f"its towers to encode {'texts' if tower == 'textual' else 'images'}"
            ) from None

    def similarity(self, images: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
        """float32 ``[len(images), len(texts)]``: ``logit_scale * cos`` of every image (rows) with every text."""
        return self.logit_scale * (self.encode_image(images) @ self.encode_text(texts).T)

    def classify(
        self, images: Sequence[Any], labels: Sequence[str], templates: Sequence[str] | None = None
    ) -> Classification:
        """Zero-shot classification of ``images`` among ``labels``, with RuCLIP Predictor's prompt ensembling.

        Every label goes into every template ("{}" marks where; default: the
        manifest's templates, else RuCLIP's). Each label's text embedding is the
        renormalised mean of its normalised embeddings over the templates, as
        ``ruclip.Predictor.get_text_latents``; the probabilities are a softmax
        over labels of ``logit_scale * cos``.
        """
        labels = check_texts(labels)
        templates = self.templates if templates is None else check_templates(templates)
        text = label_embeddings(self.encode_text, labels, templates)
        probs = zero_shot_probs(self.encode_image(images), text, self.logit_scale)
        return Classification(labels=list(labels), probs=probs)

    def _textual_feed(self, chunk: list[str]) -> dict[str, np.ndarray]:
        feed = self.tokenize(chunk)
        return cut_padding(feed, self._pad_id) if self._trim_seq else feed

    def _check_graph(self, tower: str, runner: Runner) -> None:
        """Refuse a graph that does not take this tower's inputs or give ``embed_dim`` wide embeddings.

        A bundle whose two graphs were swapped, or whose manifest lies about the
        width, then fails at load instead of at the first call (or never, with a
        wrong vector).
        """
        fed = set(self._textual_feed([""])) if tower == "textual" else {"pixel_values"}
        names = {spec.name for spec in runner.inputs}
        where = f"{self.bundle.path}: the {tower} graph {self.bundle.graph(tower).file!r}"
        if names != fed:
            raise BundleError(
                f"{where} takes inputs {sorted(names)}, but the {tower} tower feeds {sorted(fed)}; "
                "were the graphs swapped?"
            )
        width = runner.output_shapes[0][-1] if runner.output_shapes and runner.output_shapes[0] else None
        if width is not None and width != self.embed_dim:
            raise BundleError(
                f"{where} gives {width}-wide embeddings, but the manifest's embed_dim is {self.embed_dim}"
            )
        size = self.preprocess.spec.image_size
        pixels = next((spec.shape for spec in runner.inputs if spec.name == "pixel_values"), None)
        if pixels is not None and (
            len(pixels) != 4 or any(d not in (None, want) for d, want in zip(pixels[1:], (3, size, size), strict=True))
        ):
            raise BundleError(
                f"{where} takes pixel_values of shape {list(pixels)}, but preprocess gives [batch, 3, {size}, {size}]"
            )

    def _encode(
        self,
        items: list[Any] | np.ndarray,
        feed: Callable[[Any], dict[str, np.ndarray]],
        runner: Runner,
        normalize: bool,
        progress: Callable[[int], None] | None,
    ) -> np.ndarray:
        out = run_batches(items, feed, runner, self.batch_size, progress)
        if out.ndim != 2 or out.shape[1] != self.embed_dim:
            raise BundleError(
                f"{self.bundle.path}: a graph gave embeddings of shape {list(out.shape)}, but the "
                f"manifest's embed_dim is {self.embed_dim}"
            )
        if normalize:
            out = out / np.linalg.norm(out, axis=-1, keepdims=True)
        return out


def run_batches(
    items: list[Any] | np.ndarray,
    feed: Callable[[Any], dict[str, np.ndarray]],
    runner: Runner,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> np.ndarray:
    """``runner``'s one output for ``items``, ``batch_size`` at a time, as float32; ``progress(n)`` after each batch."""
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a callable taking a count, got {type(progress).__name__}")
    parts = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        parts.append(next(iter(runner.infer(feed(chunk)).values())))
        if progress:
            progress(len(chunk))
    return np.concatenate(parts).astype(np.float32, copy=False)


def check_pixels(pixel_values: Any, size: int) -> None:
    """Refuse anything but float32 ``[N>=1, 3, size, size]``, what ``ImagePreprocessor`` returns."""
    if (
        not isinstance(pixel_values, np.ndarray)
        or pixel_values.dtype != np.float32
        or pixel_values.shape[1:] != (3, size, size)
        or not len(pixel_values)
    ):
        raise InputError(
            f"expected float32 pixels shaped [N>=1, 3, {size}, {size}] as `preprocess` returns, got "
            f"{type(pixel_values).__name__} {getattr(pixel_values, 'dtype', '')} "
            f"{getattr(pixel_values, 'shape', '')}"
        )


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1, got {type(batch_size).__name__} {batch_size!r:.40}")
    return batch_size


def _check_towers(towers: str | Sequence[str]) -> tuple[str, ...]:
    try:
        chosen = (towers,) if isinstance(towers, str) else tuple(towers)
    except TypeError:
        chosen = ()
    if not chosen or not all(isinstance(t, str) for t in chosen) or not set(chosen) <= set(TOWERS):
        raise InputError(f"towers must name one or both of {TOWERS}, got {towers!r}")
    return tuple(t for t in TOWERS if t in chosen)
