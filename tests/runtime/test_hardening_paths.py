"""Paths that are not regular files or cannot be read, in the library and the CLI: typed errors, no hang, no debris."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clip_onnx.errors import BundleError, InputError
from clip_onnx.runtime import ClipModel
from clip_onnx.runtime.images import load_image
from tests.hardening import assert_one_error_line, call_within, run_without_read_bypass


@pytest.fixture()
def fifo(tmp_path):
    path = tmp_path / "photo.png"
    os.mkfifo(path)
    return path


@pytest.fixture()
def unix_socket(tmp_path):
    path = tmp_path / "photo.jpg"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    yield path
    server.close()


def test_a_fifo_as_an_image_path_is_refused_without_blocking(fifo):
    with pytest.raises(InputError, match="photo.png.*named pipe"):
        call_within(10, load_image, fifo)


@pytest.mark.parametrize("kind", ["a socket", "a character device", "a directory"])
def test_sockets_devices_and_directories_are_refused(kind, unix_socket, tmp_path):
    # /dev/zero never ends: a reader that does not refuse it first reads until memory runs out.
    path = {"a socket": unix_socket, "a character device": "/dev/zero", "a directory": tmp_path}[kind]
    with pytest.raises(InputError, match=f"is {kind}, not a regular file"):
        call_within(10, load_image, path)


def test_a_nul_byte_in_a_path_is_an_input_error():
    with pytest.raises(InputError, match="cannot read"):
        load_image("photo\x00.png")


def test_an_unreadable_image_is_an_input_error(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    tmp_path.chmod(0o755)
    result = run_without_read_bypass(f"""
        from clip_onnx.runtime.images import load_image
        from clip_onnx.errors import InputError
        try:
            load_image({str(path)!r})
        except InputError as exc:
            print("InputError:", exc)
    """)
    assert (
        result.stdout.startswith("InputError:")
        and "secret.png" in result.stdout
        and "permission denied" in result.stdout
    ), result.stdout + result.stderr


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "copy")


def test_a_fifo_inside_a_bundle_is_refused_without_blocking(bundle_copy):
    (bundle_copy / "bpe.model").unlink()
    os.mkfifo(bundle_copy / "bpe.model")
    with pytest.raises(BundleError, match="'bpe.model' is a named pipe"):
        call_within(10, ClipModel.load, bundle_copy)


@pytest.mark.parametrize("target", ["directory", "graph", "manifest"])
def test_an_unreadable_bundle_is_a_bundle_error(bundle_copy, target):
    path = {"directory": bundle_copy, "graph": bundle_copy / "visual.onnx", "manifest": bundle_copy / "manifest.json"}
    path[target].chmod(0)
    bundle_copy.parent.chmod(0o755)
    result = run_without_read_bypass(f"""
        from clip_onnx.runtime import ClipModel
        from clip_onnx.errors import BundleError
        try:
            ClipModel.load({str(bundle_copy)!r})
        except BundleError as exc:
            print("BundleError:", exc)
    """)
    bundle_copy.chmod(0o755)
    assert result.stdout.startswith("BundleError:") and "ermission denied" in result.stdout, (
        result.stdout + result.stderr
    )


def cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-c", "from clip_onnx.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_classify_refuses_a_fifo_in_one_line(tiny_bundle, fifo):
    assert_one_error_line(
        cli("classify", str(tiny_bundle), str(fifo), "--labels", "кот", timeout=60), "photo.png", "named pipe"
    )


@pytest.mark.parametrize("out", ["missing/vectors.npy", "existing_dir"])
def test_cli_embed_into_a_missing_directory_or_onto_a_directory_leaves_nothing(tiny_bundle, tmp_path, out):
    work = tmp_path / "work"
    (work / "existing_dir").mkdir(parents=True)
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    result = cli("embed", str(tiny_bundle), "--text", "кот", "-o", str(work / out))
    assert_one_error_line(result, "error: ")
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before


def test_cli_export_without_torch_names_the_extra_in_one_line(tmp_path):
    # What a worker's install (clip-onnx alone) sees: torch cannot be imported.
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['torch'] = None; from clip_onnx.cli import main; main()"]
        + ["export", "ruclip-demo", "-o", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_error_line(result, "`clip-onnx export` needs the torch package", "pip install 'clip-onnx[export]'")
    assert list(tmp_path.iterdir()) == []


def test_embedding_a_regular_file_still_works(tiny_bundle, tmp_path):
    path = tmp_path / "ok.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)
    assert ClipModel.load(tiny_bundle).encode_image([path]).shape == (1, 32)
