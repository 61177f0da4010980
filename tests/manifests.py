"""Manifests for tests that need a valid ``Manifest`` value but no real model (bundle writer tests)."""

from __future__ import annotations

import json
from pathlib import Path

from clip_onnx.bundle import MANIFEST
from clip_onnx.files import sha256_file
from clip_onnx.manifest import Manifest, ModelInfo, ModelKind
from clip_onnx.preprocess_spec import CLIP_MEAN, CLIP_STD, PreprocessSpec


def stub_manifest(name: str = "stub") -> Manifest:
    """A manifest with no graphs: enough for BundleWriter, which only hashes and writes."""
    return Manifest(
        kind=ModelKind.CLIP, graphs={}, preprocess=PreprocessSpec(8, CLIP_MEAN, CLIP_STD), model=ModelInfo(name=name)
    )


# What every exported bundle carries for its self-test (clip_onnx/export/self_test.py).
SELF_TEST_IMAGES = frozenset(f"self_test/image-{i}.png" for i in range(4))
SELF_TEST_CLIP = SELF_TEST_IMAGES | {"self_test/visual.npy", "self_test/textual.npy"}
SELF_TEST_CLASSIFIER = SELF_TEST_IMAGES | {"self_test/visual.npy"}


def rehash(bundle: Path, changed: str) -> None:
    """Record ``changed``'s new sha256 and size in the manifest, as someone who altered the file on purpose would."""
    path = bundle / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["files"][changed] = {"sha256": sha256_file(bundle / changed), "size": (bundle / changed).stat().st_size}
    path.write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
