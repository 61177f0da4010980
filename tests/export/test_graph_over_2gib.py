"""A graph over protobuf's 2 GiB limit, end to end: the big-model CI step (`-m big`, in .ci/run after the suite).

A synthetic RuCLIP whose visual tower is wide and short (2,048 wide, 11 blocks: 2.24 GB of fp32
weights) and sees one 32x32 patch, so it is big on disk and cheap to run. Its fp32 export must put the
weights in ``visual.onnx.data``, hash that file in the manifest and load through the runtime with the
numbers of eager PyTorch; its int8 export must fit back inside one graph file. About 5 minutes and
10-12 GB of peak RSS on 2 cores (Xeon); everything written is deleted at the end of the module.
"""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import onnx
import pytest
import torch

from clip_onnx.errors import BundleError
from clip_onnx.export.families import ruclip
from clip_onnx.export.int8 import has_external_data
from clip_onnx.export.pipeline import export_bundle
from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images
from clip_onnx.thresholds import THRESHOLDS
from tests.bundles import write_checkpoint
from tests.tokenizer_files import DEMO_BPE

pytestmark = [pytest.mark.slow, pytest.mark.big]

TWO_GIB = 2**31
CONFIG = {
    "embed_dim": 64,
    "image_resolution": 32,
    "vision_layers": 11,
    "vision_width": 2048,
    "vision_patch_size": 32,
    "context_length": 77,
    "vocab_size": 348,  # the demo tokenizer's
    "transformer_width": 64,
    "transformer_heads": 2,
    "transformer_layers": 2,
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("over-2gib")
    yield path
    shutil.rmtree(path, ignore_errors=True)  # pytest keeps old tmp dirs; these hold gigabytes


@pytest.fixture(scope="module")
def checkpoint(workdir):
    return write_checkpoint(workdir / "ckpt", CONFIG, DEMO_BPE)


@pytest.fixture(scope="module")
def fp32_bundle(checkpoint, workdir):
    return export_bundle(str(checkpoint), workdir / "fp32").path


def _eager_image_embeddings(checkpoint, pixels: np.ndarray) -> np.ndarray:
    """The checkpoint in eager PyTorch on already preprocessed pixels, normalised as CLIP compares them."""
    model = ruclip.load(str(checkpoint)).visual.module
    with torch.no_grad():
        out = model(torch.from_numpy(pixels)).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a.astype(np.float64) * b, axis=1)


def test_the_fp32_graph_keeps_its_weights_in_hashed_external_data_and_loads(fp32_bundle, checkpoint):
    data = fp32_bundle / "visual.onnx.data"
    assert data.stat().st_size > TWO_GIB and (fp32_bundle / "visual.onnx").stat().st_size < 2 << 20
    graph = onnx.load(fp32_bundle / "visual.onnx", load_external_data=False)
    locations = {e.value for t in graph.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"visual.onnx.data"}  # relative: the bundle can move
    model = ClipModel.load(fp32_bundle)
    listed = model.bundle.manifest.files["visual.onnx.data"]
    assert (listed.sha256, listed.size) == (_sha256(data), data.stat().st_size)
    images = synthetic_images(6, seed=5)
    got, pixels = model.encode_image(images), model.preprocess(images)
    del model  # 2.2 GB of session, before eager PyTorch loads as much again
    want = _eager_image_embeddings(checkpoint, pixels)
    assert _cosines(got, want).min() >= THRESHOLDS["fp32"].min_cosine
    assert np.abs(got - want).max() <= THRESHOLDS["fp32"].max_abs


def test_a_changed_byte_in_the_external_data_is_refused_at_load(fp32_bundle):
    data = fp32_bundle / "visual.onnx.data"
    with open(data, "r+b") as f:
        f.seek(data.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    try:
        with pytest.raises(BundleError, match="visual.onnx.data: sha256"):
            ClipModel.load(fp32_bundle)
    finally:
        with open(data, "r+b") as f:
            f.seek(data.stat().st_size // 2)
            f.write(byte)
    assert ClipModel.load(fp32_bundle).embed_dim == CONFIG["embed_dim"]


def test_the_int8_graph_fits_inline_and_passes_the_gate(checkpoint, fp32_bundle, workdir):
    # Random weights make top-1 a coin toss between near-equal texts: the gate holds cosine alone here.
    bundle = export_bundle(str(checkpoint), workdir / "int8", precision="int8", min_agreement=0, gate_images=32)
    manifest = bundle.manifest.to_dict()
    assert manifest["graphs"]["visual"]["precision"] == "int8", manifest["graphs"]["visual"]
    assert "visual.onnx.data" not in manifest["files"] and not (bundle.path / "visual.onnx.data").exists()
    graph = bundle.path / "visual.onnx"
    assert not has_external_data(graph) and graph.stat().st_size < (fp32_bundle / "visual.onnx.data").stat().st_size / 3
    gate = manifest["parity"][-1]
    assert gate["passed"] and min(r["min_cosine"] for r in gate["rows"]) >= THRESHOLDS["int8"].min_cosine
    model = ClipModel.load(bundle.path)
    images = synthetic_images(6, seed=6)
    got, pixels = model.encode_image(images), model.preprocess(images)
    del model
    assert _cosines(got, _eager_image_embeddings(checkpoint, pixels)).min() >= THRESHOLDS["int8"].min_cosine
