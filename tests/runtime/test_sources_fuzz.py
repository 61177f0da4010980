"""A property over folder sources: Hypothesis builds trees of good images, broken files, FIFOs and links.

Invariant of `embed_dataset` on any such tree: every good item appears once, in
walk order, with ClipModel's vector; every other item is in errors.jsonl, in
order, with its reason; and the call returns (a timeout turns a hang into a
failure).  The default profile is a few seconds; `-m slow` runs many more trees.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip_onnx.batch import IMAGE_EXTENSIONS, embed_dataset
from clip_onnx.errors import InputError
from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images
from tests.hardening import call_within

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CAP = 64 * 1024  # --max-file-size of every run; "huge" files are just over it

# What each kind of entry is, and the error class it must be recorded with (None: a good image).
KINDS = {
    "good": None,
    "link to good": None,
    "broken": "InputError",
    "truncated": "InputError",
    "empty": "InputError",
    "fifo": "NotRegularFileError",
    "link to fifo": "NotRegularFileError",
    "link to /dev/zero": "NotRegularFileError",
    "dangling link": "FileNotFoundError",
    "link loop": "OSError",
    "huge": "FileTooLargeError",
    "folder": None,  # a folder named like an image: walked into, not an item
}
ENTRY = st.tuples(
    st.lists(st.sampled_from(["x", "y", ".z"]), max_size=2),  # the folders it lies in
    st.sampled_from(["a", "b", "B", "c", ".h"]),  # its name ('.h' is hidden)
    st.sampled_from([".jpg", ".PNG", ".jpeg", ".txt", ""]),  # its extension
    st.sampled_from(sorted(KINDS)),
    st.integers(0, 2),  # which pool image a good entry holds
)
TREES = st.lists(ENTRY, max_size=9, unique_by=lambda e: (tuple(e[0]), e[1] + e[2]))


@pytest.fixture(scope="module")
def pool(demo_bundle, tmp_path_factory):
    """Three encoded images outside every tree, with ClipModel's vectors for them."""
    folder = tmp_path_factory.mktemp("pool")
    paths = [folder / f"{i}.jpg" for i in range(3)]  # JPEGs of 14-29 KB, under CAP
    for path, img in zip(paths, synthetic_images(3, seed=21), strict=True):
        img.save(path)
    return paths, ClipModel.load(demo_bundle).encode_image(paths)


def build(root: Path, tree, pool_paths) -> None:
    for folders, name, ext, kind, index in tree:
        parent = root.joinpath(*folders)
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / (name + ext)
        good = pool_paths[index]
        if kind == "good":
            path.write_bytes(good.read_bytes())
        elif kind == "link to good":
            path.symlink_to(good)
        elif kind == "broken":
            path.write_bytes(b"not an image " * (index + 1))
        elif kind == "truncated":
            path.write_bytes(good.read_bytes()[:200])
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "link to fifo":
            os.mkfifo(parent / f".fifo-{name}{ext}")
            path.symlink_to(parent / f".fifo-{name}{ext}")
        elif kind == "link to /dev/zero":
            path.symlink_to("/dev/zero")
        elif kind == "dangling link":
            path.symlink_to(root / "nowhere")
        elif kind == "link loop":
            path.symlink_to(path)
        elif kind == "huge":
            path.write_bytes(os.urandom(CAP + 1))
        else:
            path.mkdir(exist_ok=True)


def expected_walk(root: Path, tree) -> list[tuple[str, str, int]]:
    """(path, kind, pool index) of the items a folder walk yields, in its order, worked out from the tree alone.

    In each folder: its image files sorted by name, then its sub-folders sorted
    by name; hidden names and other extensions skipped.
    """
    files: dict[tuple, list] = {}
    folders: dict[tuple, set] = {(): set()}
    for dirs, name, ext, kind, index in tree:
        for depth in range(len(dirs)):
            folders.setdefault(tuple(dirs[:depth]), set()).add(dirs[depth])
            folders.setdefault(tuple(dirs[: depth + 1]), set())
        if kind == "folder":
            folders.setdefault(tuple(dirs), set()).add(name + ext)
            folders.setdefault((*dirs, name + ext), set())
        else:
            files.setdefault(tuple(dirs), []).append((name + ext, kind, index))
    items = []

    def walk(where: tuple) -> None:
        for filename, kind, index in sorted(files.get(where, [])):
            if not filename.startswith(".") and os.path.splitext(filename)[1].lower() in IMAGE_EXTENSIONS:
                items.append((str(root.joinpath(*where, filename)), kind, index))
        for sub in sorted(folders.get(where, ())):
            if not sub.startswith("."):
                walk((*where, sub))

    walk(())
    return items


def check_tree(demo_bundle, pool, base: Path, tree) -> None:
    pool_paths, pool_vectors = pool
    with tempfile.TemporaryDirectory(dir=base) as scratch:
        root, out = Path(scratch) / "photos", Path(scratch) / "e.npy"
        root.mkdir()
        build(root, tree, pool_paths)
        items = expected_walk(root, tree)
        run = {"sources": [str(root)], "batch_size": 3, "part_size": 5, "workers": 2, "max_file_bytes": CAP}
        if not items:
            with pytest.raises(InputError, match="holds no image files"):
                call_within(30, embed_dataset, demo_bundle, out, **run)
            return
        summary = call_within(30, embed_dataset, demo_bundle, out, **run)
        good = [(path, index) for path, kind, index in items if KINDS[kind] is None]
        bad = [(path, KINDS[kind]) for path, kind, _ in items if KINDS[kind] is not None]
        assert (summary.total, summary.embedded, summary.failed) == (len(items), len(good), len(bad))
        assert Path(scratch, "e.ids.txt").read_text("utf-8").splitlines() == [path for path, _ in good]
        vectors = np.load(out)
        assert vectors.shape == (len(good), pool_vectors.shape[1])
        if good:
            np.testing.assert_allclose(vectors, pool_vectors[[i for _, i in good]], atol=1e-6, rtol=0)
        errors_file = Path(scratch, "e.errors.jsonl")
        errors = [json.loads(line) for line in errors_file.read_text("utf-8").splitlines()] if bad else []
        assert errors_file.exists() == bool(bad)
        assert [(e["id"], e["error"]) for e in errors] == bad
        assert all(e["message"] for e in errors)


@FAST
@given(tree=TREES)
def test_every_item_of_any_tree_is_embedded_once_in_order_or_recorded_with_its_reason(
    demo_bundle, pool, tmp_path_factory, tree
):
    check_tree(demo_bundle, pool, tmp_path_factory.getbasetemp(), tree)


@pytest.mark.slow
@SLOW
@given(tree=TREES)
def test_the_same_on_many_more_trees(demo_bundle, pool, tmp_path_factory, tree):
    check_tree(demo_bundle, pool, tmp_path_factory.getbasetemp(), tree)
