"""The self-test a bundle carries: a few small pictures and prompts, with eager PyTorch's outputs on them.

Written into the bundle at export (``self_test/``, listed and hashed like every
other file); ``clip_onnx.runtime.self_test`` replays it wherever the bundle is
loaded.  The pictures are PNGs, which decode to the same pixels everywhere, and
the eager reference is computed on exactly the pixels and ids the runtime
makes of them, so the only thing a replay can find is the machine: kernels,
provider, GPU, library versions.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from clip_onnx.bundle import BundleWriter
from clip_onnx.errors import ParityError
from clip_onnx.export import validate
from clip_onnx.export.families.base import ExportableModel
from clip_onnx.manifest import Manifest, SelfTestSpec
from clip_onnx.runtime import ClipClassifier, ClipModel, run_self_test
from clip_onnx.runtime.preprocess import ImagePreprocessor
from clip_onnx.synthetic import synthetic_images

log = logging.getLogger(__name__)

SELF_TEST_DIR = "self_test"
# Enough items to see a kernel or provider that computes differently (every picture shows it: the int16
# saturation of benchmarks/NOTES.md "int8 on every CPU" cost 0.012 of cosine on each one), few enough to stay
# small: four pictures of at most 128 px are ~100 kB.
IMAGES = 4
TEXTS = 8
MAX_SIDE = 128
# The load-time test replays the first of them only, to stay a small part of the load
# (docs/precision.md, "self_test= at load").
AT_LOAD = {"visual": 1, "textual": 4}
SEED = 20261207


def write_self_test(model: ExportableModel, out: Path) -> SelfTestSpec:
    """Write the pictures and the eager references under ``out / SELF_TEST_DIR``; returns the manifest's record."""
    folder = out / SELF_TEST_DIR
    folder.mkdir(exist_ok=True)
    images = []
    for i, picture in enumerate((model.gate_images or synthetic_images)(IMAGES, SEED)):
        name = f"{SELF_TEST_DIR}/image-{i}.png"
        _small(picture).save(out / name, format="PNG", optimize=True)
        images.append(name)
    pixels = ImagePreprocessor(model.preprocess)([out / name for name in images])
    feeds = {"visual": [{"pixel_values": pixels}]}
    texts: list[str] = []
    if model.textual is not None:
        texts = list(model.sample_texts[:TEXTS])
        feeds["textual"] = [model.tokenize(texts)]
    references = {}
    for tower, outputs in validate.eager_outputs(model, feeds).items():
        references[tower] = f"{SELF_TEST_DIR}/{tower}.npy"
        np.save(out / references[tower], np.ascontiguousarray(outputs[0], dtype=np.float32), allow_pickle=False)
    log.info("self-test: %d pictures, %d prompts, eager references for %s", len(images), len(texts), sorted(references))
    at_load = {tower: min(AT_LOAD[tower], len(images) if tower == "visual" else len(texts)) for tower in references}
    return SelfTestSpec(images=tuple(images), texts=tuple(texts), references=references, at_load=at_load)


def _small(picture: Image.Image) -> Image.Image:
    picture = picture.convert("RGB")
    picture.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return picture


def replay_self_test(writer: BundleWriter, manifest: Manifest) -> Manifest:
    """Replay the self-test through the runtime on the staged bundle; ParityError if the bundle misses its own.

    Returns the manifest with each tower's cosine on this machine (``export_cosine``), which ``clip-onnx
    verify`` prints beside the one it measures.
    """
    if manifest.self_test is None:
        raise ParityError(["the manifest has no self-test to replay"])
    staged = writer.stage(manifest)
    checks = []
    for tower in manifest.graphs:  # one tower open at a time: a ViT-H graph holds 2 GB
        model = ClipClassifier(staged) if manifest.kind == "classifier" else ClipModel(staged, towers=(tower,))
        checks += run_self_test(model).checks
        del model
    failed = [f"self-test {check.line()}" for check in checks if not check.passed]
    if failed:
        raise ParityError(failed)
    cosines = {check.tower: round(check.min_cosine, 8) for check in checks}
    return replace(manifest, self_test=replace(manifest.self_test, export_cosine=cosines))
