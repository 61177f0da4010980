"""Bundles from someone else: self-contained, every opened file listed and hashed, the manifest's schema checked."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from clip_onnx.bundle import MANIFEST, read_bundle
from clip_onnx.errors import BundleError
from clip_onnx.runtime import ClipModel
from tests.references import eager_references


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "copy")


def edit_manifest(bundle, change) -> None:
    """Apply ``change`` to the manifest; in its dotted paths "@" spells a dot inside a file name."""
    path = bundle / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["files"] = {k.replace(".", "@"): v for k, v in manifest["files"].items()}
    result = change(manifest)
    target = manifest if result is None else result
    for doc in target if isinstance(target, list) else [target]:
        if isinstance(doc.get("files"), dict):
            doc["files"] = {k.replace("@", "."): v for k, v in doc["files"].items()}
    path.write_text(json.dumps(target), encoding="utf-8")


@pytest.mark.parametrize("name", ["visual.onnx", "bpe.model"])
def test_a_listed_file_that_links_outside_the_bundle_is_refused(bundle_copy, tmp_path, name):
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    (bundle_copy / name).rename(outside)
    (bundle_copy / name).symlink_to(outside)
    with pytest.raises(BundleError, match=f"'{name}' leads outside the bundle"):
        ClipModel.load(bundle_copy)
    with pytest.raises(BundleError, match="leads outside"):
        ClipModel.load(bundle_copy, verify=False)


def test_an_unlisted_link_out_of_the_bundle_is_refused(bundle_copy):
    # ONNX Runtime opens external data by the name the graph gives, listed or not.
    (bundle_copy / "visual.onnx.data").symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match="'visual.onnx.data' leads outside"):
        ClipModel.load(bundle_copy)


def test_a_link_that_stays_inside_the_bundle_is_fine(bundle_copy, tiny_bundle):
    (bundle_copy / "tokenizer").mkdir()
    (bundle_copy / "bpe.model").rename(bundle_copy / "tokenizer" / "bpe.model")
    (bundle_copy / "bpe.model").symlink_to("tokenizer/bpe.model")
    texts = ["кот", "собака на траве"]
    np.testing.assert_array_equal(
        ClipModel.load(bundle_copy).encode_text(texts), ClipModel.load(tiny_bundle).encode_text(texts)
    )


def test_a_tokenizer_file_missing_from_the_hash_list_is_refused(bundle_copy):
    edit_manifest(bundle_copy, _drop("files.bpe@model"))
    with pytest.raises(BundleError, match="'tokenizer.file' names 'bpe.model', which 'files' does not list"):
        ClipModel.load(bundle_copy)


def test_a_tokenizer_file_that_does_not_match_its_hash_is_refused(bundle_copy):
    data = bytearray((bundle_copy / "bpe.model").read_bytes())
    data[-2] = ord("9") if data[-2] != ord("9") else ord("8")
    (bundle_copy / "bpe.model").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="bpe.model: sha256"):
        ClipModel.load(bundle_copy)


def _set(path: str, value):
    def change(manifest):
        keys = path.split(".")
        target = manifest
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _drop(path: str):
    def change(manifest):
        keys = path.split(".")
        target = manifest
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


BAD_MANIFESTS = {
    "json array": (lambda m: [m], "JSON object, got a JSON array"),
    "files not a mapping": (_set("files", ["visual.onnx"]), "'files' must be a JSON object"),
    "missing size": (_drop("files.visual@onnx.size"), "'files['visual.onnx'].size' is missing"),
    "size a string": (_set("files.visual@onnx.size", "123"), "'files['visual.onnx'].size' must be an int"),
    "missing logit_scale": (_drop("logit_scale"), "'logit_scale' is missing"),
    "missing graph file": (_drop("graphs.visual.file"), "'graphs.visual.file' is missing"),
    "graph file a number": (_set("graphs.textual.file", 7), "'graphs.textual.file' must be a file name"),
    "missing textual graph": (_drop("graphs.textual"), "'graphs.textual' is missing"),
    "NaN logit_scale": (_set("logit_scale", float("nan")), "'logit_scale' must be a finite number > 0"),
    "infinite logit_scale": (_set("logit_scale", float("inf")), "'logit_scale' must be a finite number > 0"),
    "negative logit_scale": (_set("logit_scale", -3.0), "'logit_scale' must be a finite number > 0"),
    "string logit_scale": (_set("logit_scale", "4.0"), "'logit_scale' must be a finite number > 0"),
    "string embed_dim": (_set("embed_dim", "32"), "'embed_dim' must be an int > 0"),
    "boolean embed_dim": (_set("embed_dim", True), "'embed_dim' must be an int > 0"),
    "string pad_id": (_set("tokenizer.pad_id", "0"), "'tokenizer.pad_id' must be an int"),
    "tokenizer a list": (_set("tokenizer", ["yttm_bpe"]), "'tokenizer' must be a JSON object"),
    "preprocess a string": (_set("preprocess", "clip"), "'preprocess' must be a JSON object"),
    "huge image_size": (_set("preprocess.image_size", 10**7), "'preprocess.image_size' must be an int from 1"),
    "dynamic_axes a list": (_set("graphs.textual.dynamic_axes", [1]), "'graphs.textual.dynamic_axes' must be"),
    "template with two fields": (_set("templates", ["{} и {}"]), "'templates'"),
    "unknown kind": (_set("kind", "detector"), "'kind'"),
    "an extra graph": (_set("graphs.image", {"file": "visual.onnx"}), "'graphs' has"),
    "a file outside": (_set("files.@@/secret", {"sha256": "0" * 64, "size": 1}), "outside the bundle"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_malformed_manifest_is_a_bundle_error_naming_the_field(bundle_copy, case):
    change, fragment = BAD_MANIFESTS[case]
    edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError) as err:
        ClipModel.load(bundle_copy)
    assert fragment in str(err.value) and "manifest.json" in str(err.value), str(err.value)


def test_deeply_nested_json_is_a_bundle_error(bundle_copy):
    (bundle_copy / MANIFEST).write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    with pytest.raises(BundleError, match="unreadable manifest"):
        read_bundle(bundle_copy)


def test_an_oversized_manifest_is_refused_without_parsing(bundle_copy):
    with open(bundle_copy / MANIFEST, "wb") as f:
        f.truncate(17 << 20)
    with pytest.raises(BundleError, match="larger than 16 MiB"):
        read_bundle(bundle_copy)


def test_swapped_graphs_are_refused_at_load(bundle_copy):
    def swap(manifest):
        graphs = manifest["graphs"]
        graphs["visual"]["file"], graphs["textual"]["file"] = graphs["textual"]["file"], graphs["visual"]["file"]

    edit_manifest(bundle_copy, swap)
    with pytest.raises(BundleError, match="were the graphs swapped"):
        ClipModel.load(bundle_copy)


@pytest.mark.parametrize("towers", [("visual",), ("textual",)])
def test_an_embed_dim_the_graphs_do_not_give_is_refused_at_load(bundle_copy, towers):
    edit_manifest(bundle_copy, _set("embed_dim", 33))
    with pytest.raises(BundleError, match="32-wide embeddings, but the manifest's embed_dim is 33"):
        ClipModel.load(bundle_copy, towers=towers)


def test_the_untouched_bundle_gives_eager_pytorchs_similarities(tiny_bundle):
    """Against the eager model's vectors stored at export (tests/references.py), not against the runtime."""
    eager = eager_references(tiny_bundle)
    assert eager.logit_scale == pytest.approx(np.exp(4.0))  # the tiny checkpoint's logit_scale (tests/bundles.py)
    got = ClipModel.load(tiny_bundle).similarity(eager.images, eager.texts)
    # The fp32 gate's max abs 1e-4 per embedding value, times the scale.
    np.testing.assert_allclose(got, eager.similarity(), rtol=0, atol=eager.logit_scale * 1e-4)


def test_a_bundle_path_that_is_a_file_is_named(tmp_path):
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"PK")
    with pytest.raises(BundleError, match="bundle.zip' is a regular file, not a bundle directory"):
        ClipModel.load(path)


def test_reading_is_not_fooled_by_a_relative_path(bundle_copy, monkeypatch):
    eager = eager_references(bundle_copy)
    monkeypatch.chdir(bundle_copy.parent)
    got = ClipModel.load(os.path.basename(bundle_copy)).encode_text(eager.texts)
    assert np.sum(got * eager.textual, axis=1).min() >= 0.99999
