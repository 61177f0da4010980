"""`clip-onnx embed` over datasets: sources, ids, bad files, --resume after a kill, and parity with ClipModel.

Everything runs the real command (a subprocess, as a user would) on the embedded,
really trained demo bundle with real ONNX Runtime sessions.
"""

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images

CLI = [sys.executable, "-c", "from clip_onnx.cli import main; main()"]


def embed(*args, check=True, **kwargs):
    result = subprocess.run([*CLI, "embed", *map(str, args)], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"clip-onnx embed {' '.join(map(str, args))} exited {result.returncode}:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder tree of JPEGs and PNGs, with a hidden folder, a hidden file and a non-image to be skipped."""
    root = tmp_path_factory.mktemp("photos")
    (root / "b" / "deeper").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    names = ["a1.jpg", "a2.PNG", "b/b1.jpeg", "b/deeper/c1.png", "b/deeper/c2.jpg", "z.webp"]
    for name, img in zip(names, synthetic_images(len(names), seed=3), strict=True):
        img.save(root / name)
    synthetic_images(1)[0].save(root / ".thumbnails" / "t.jpg")
    synthetic_images(1)[0].save(root / "._a1.jpg")
    (root / "notes.txt").write_text("not an image", encoding="utf-8")
    return root, [str(root / n) for n in names]


@pytest.fixture(scope="module")
def demo_model(demo_bundle):
    return ClipModel.load(demo_bundle)


def read_parquet(path):
    table = pq.read_table(path)
    return table.column("id").to_pylist(), np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)


def test_folder_glob_and_list_give_ids_in_source_order_and_clipmodel_vectors(demo_bundle, demo_model, photos, tmp_path):
    root, paths = photos
    listed = tmp_path / "list.txt"
    listed.write_text(f"{paths[2]}\n\n{paths[0]}\n", encoding="utf-8")
    out = tmp_path / "e.parquet"
    result = embed(demo_bundle, root, f"{root}/b/**/*.png", f"@{listed}", paths[5], "-o", out)
    ids, vectors = read_parquet(out)
    # The folder walk sorts each level, a folder's files before its sub-folders', and skips hidden entries.
    walked = [paths[0], paths[1], paths[5], paths[2], paths[3], paths[4]]
    assert ids == walked + [paths[3]] + [paths[2], paths[0]] + [paths[5]]
    assert pq.read_schema(out).field("embedding").type == pa.list_(pa.float32(), 64)
    np.testing.assert_allclose(vectors, demo_model.encode_image(ids), atol=1e-6, rtol=0)
    assert "embedded 10 of 10 items" in result.stdout and not (tmp_path / "e.errors.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.parquet", "list.txt"]


def test_npy_output_with_ids_and_the_old_image_and_text_options(demo_bundle, demo_model, photos, tmp_path):
    _, paths = photos
    embed(demo_bundle, "--image", paths[4], "--image", paths[0], "-o", tmp_path / "i.npy")
    assert (tmp_path / "i.ids.txt").read_text(encoding="utf-8").splitlines() == [paths[4], paths[0]]
    np.testing.assert_allclose(np.load(tmp_path / "i.npy"), demo_model.encode_image([paths[4], paths[0]]), atol=1e-6)
    texts = ["красная звезда", "синий круг"]
    embed(demo_bundle, "--text", texts[0], "--text", texts[1], "-o", tmp_path / "t.npy")
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), demo_model.encode_text(texts), atol=1e-6)
    assert (tmp_path / "t.ids.txt").read_text(encoding="utf-8").splitlines() == texts


def test_text_file_csv_and_parquet_columns(demo_bundle, demo_model, tmp_path):
    texts = ["красная звезда", "синий круг", "фото жёлтого кольца"]
    (tmp_path / "t.txt").write_text(f"{texts[0]}\n\n  {texts[1]}  \n{texts[2]}", encoding="utf-8")
    embed(demo_bundle, "--text-file", tmp_path / "t.txt", "-o", tmp_path / "a.parquet")
    ids, vectors = read_parquet(tmp_path / "a.parquet")
    assert ids == [f"{tmp_path / 't.txt'}:{n}" for n in (1, 3, 4)]
    np.testing.assert_allclose(vectors, demo_model.encode_text(texts), atol=1e-6)

    (tmp_path / "c.csv").write_text("n,caption\n1," + texts[2] + "\n2,\n3," + texts[0] + "\n", encoding="utf-8")
    pq.write_table(pa.table({"caption": texts[:2]}), tmp_path / "c.parquet")
    result = embed(
        demo_bundle,
        tmp_path / "c.csv",
        tmp_path / "c.parquet",
        "--column",
        "caption",
        "-o",
        tmp_path / "b.parquet",
        check=False,
    )
    assert result.returncode == 1, "an empty cell is a failed item"
    ids, vectors = read_parquet(tmp_path / "b.parquet")
    assert ids == [
        f"{tmp_path / 'c.csv'}:0",
        f"{tmp_path / 'c.csv'}:2",
        f"{tmp_path / 'c.parquet'}:0",
        f"{tmp_path / 'c.parquet'}:1",
    ]
    np.testing.assert_allclose(vectors, demo_model.encode_text([texts[2], texts[0], *texts[:2]]), atol=1e-6)
    errors = [json.loads(line) for line in (tmp_path / "b.errors.jsonl").read_text(encoding="utf-8").splitlines()]
    assert errors == [{"id": f"{tmp_path / 'c.csv'}:1", "error": "InputError", "message": "empty cell"}]


def test_parquet_column_of_encoded_images(demo_bundle, demo_model, photos, tmp_path):
    _, paths = photos
    blobs = [open(p, "rb").read() for p in paths[:3]] + [b"\x89PNG broken"]
    pq.write_table(pa.table({"img": pa.array(blobs, pa.binary())}), tmp_path / "imgs.parquet")
    result = embed(demo_bundle, tmp_path / "imgs.parquet", "--column", "img", "-o", tmp_path / "o.npy", "--skip-bad")
    assert "embedded 3 of 4 items, 1 failed" in result.stdout
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), demo_model.encode_image(paths[:3]), atol=1e-6)


def _huge_png(path):
    """A PNG whose header claims 100000 x 100000 pixels: past Pillow's decompression-bomb limit."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_bad_files_are_recorded_never_embedded_and_set_the_exit_code(demo_bundle, demo_model, photos, tmp_path):
    _, paths = photos
    good = tmp_path / "good.jpg"
    synthetic_images(1, seed=9)[0].save(good)
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:400])
    (tmp_path / "empty.png").write_bytes(b"")
    _huge_png(tmp_path / "huge.png")
    (tmp_path / "folder.jpg").mkdir()
    listed = tmp_path / "list.txt"
    listed.write_text(f"{tmp_path / 'missing.jpg'}\n{tmp_path / 'folder.jpg'}\n", encoding="utf-8")
    args = [
        demo_bundle,
        tmp_path / "garbage.jpg",
        good,
        tmp_path / "cut.jpg",
        tmp_path / "empty.png",
        tmp_path / "huge.png",
        f"@{listed}",
        paths[0],
        "-o",
        tmp_path / "out" / "e.parquet",
    ]
    (tmp_path / "out").mkdir()
    failed = embed(*args, check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "embedded 2 of 8 items, 6 failed" in failed.stderr and failed.stdout == "", "a failing run reports on stderr"
    ids, vectors = read_parquet(tmp_path / "out" / "e.parquet")
    assert ids == [str(good), paths[0]]
    np.testing.assert_allclose(vectors, demo_model.encode_image([good, paths[0]]), atol=1e-6)
    errors = [json.loads(line) for line in (tmp_path / "out" / "e.errors.jsonl").read_text("utf-8").splitlines()]
    assert [(e["id"].rsplit("/", 1)[1], e["error"]) for e in errors] == [
        ("garbage.jpg", "InputError"),
        ("cut.jpg", "InputError"),
        ("empty.png", "InputError"),
        ("huge.png", "InputError"),
        ("missing.jpg", "FileNotFoundError"),
        ("folder.jpg", "IsADirectoryError"),
    ]
    assert "too large" in errors[3]["message"] and all(e["message"] for e in errors)
    assert embed(*args, "--skip-bad").returncode == 0


def test_output_mistakes_give_one_line_and_leave_nothing_behind(demo_bundle, photos, tmp_path):
    root, _ = photos
    (tmp_path / "existing").mkdir()
    cases = [
        (tmp_path / "missing" / "e.parquet", "does not exist"),
        (tmp_path / "existing", "is a folder"),
        (tmp_path / "e.npy", "ends in .npy but the format is parquet"),
    ]
    for out, fragment in cases:
        extra = ["--format", "parquet"] if out.suffix == ".npy" else []
        result = embed(demo_bundle, root, "-o", out, *extra, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert fragment in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"] and not any((tmp_path / "existing").iterdir())
    assert not (tmp_path / "missing").exists()


def test_a_classifier_bundle_is_refused_with_a_pointer_to_predict(photos, tmp_path):
    """A manifest of the classifier kind (its graph is never opened: the kind alone decides)."""
    from clip_onnx.files import sha256_bytes

    bundle = tmp_path / "classifier"
    bundle.mkdir()
    files = {"visual.onnx": b"graph", "labels.txt": b"cat\ndog\n"}
    for name, data in files.items():
        (bundle / name).write_bytes(data)
    manifest = {
        "format": "clip-onnx-bundle",
        "format_version": 1,
        "kind": "classifier",
        "files": {n: {"sha256": sha256_bytes(d), "size": len(d)} for n, d in files.items()},
        "graphs": {"visual": {"file": "visual.onnx"}},
        "preprocess": {"image_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3},
        "labels": {"file": "labels.txt"},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = embed(bundle, photos[0], "-o", tmp_path / "e.parquet", check=False)
    assert result.returncode == 1 and "classifier bundle" in result.stderr and "clip-onnx predict" in result.stderr


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory):
    """Enough small JPEGs that a run is still going when its first part is committed."""
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(480):
        pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:04d}.jpg", quality=85)
    (root / "0100.jpg").write_bytes(b"broken")
    return root


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_resume_after_a_kill_writes_the_file_an_uninterrupted_run_writes(demo_bundle, many_photos, tmp_path, suffix):
    args = [demo_bundle, many_photos, "--batch-size", "8", "--part-size", "32", "--skip-bad"]
    whole = tmp_path / f"whole{suffix}"
    embed(*args, "-o", whole)
    out = tmp_path / f"killed{suffix}"
    partial = tmp_path / f"killed{suffix}.partial"
    proc = subprocess.Popen(
        [*CLI, "embed", *map(str, args), "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not any(partial.glob("part-*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    parts = sorted(partial.glob("part-*.npz"))
    assert parts and not out.exists(), "the run must be killed after its first part and before it finished"
    assert parts[-1].name.endswith(f"{len(parts) * 32:012d}.npz") and len(parts) * 32 < 480

    refused = embed(*args, "-o", out, check=False)
    assert refused.returncode == 1 and "--resume" in refused.stderr
    resumed = embed(*args, "-o", out, "--resume")
    assert f"{len(parts) * 32} of them by the stopped run" in resumed.stdout
    assert out.read_bytes() == whole.read_bytes() and not partial.exists()
    sidecars = [".errors.jsonl"] + ([".ids.txt"] if suffix == ".npy" else [])
    for name in sidecars:
        assert (tmp_path / f"killed{name}").read_text("utf-8") == (tmp_path / f"whole{name}").read_text("utf-8")


def test_resume_refuses_another_bundle_and_other_batching(demo_bundle, tiny_bundle, many_photos, tmp_path):
    from clip_onnx.batch import embed_dataset

    out = tmp_path / "e.parquet"

    def stop_after_first_part(done, total):
        if done >= 64:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_dataset(
            demo_bundle,
            out,
            sources=[str(many_photos)],
            batch_size=8,
            part_size=32,
            workers=1,
            progress=stop_after_first_part,
        )
    assert not out.exists() and any((tmp_path / "e.parquet.partial").glob("part-*.npz"))
    other = embed(
        tiny_bundle, many_photos, "--batch-size", "8", "--part-size", "32", "-o", out, "--resume", check=False
    )
    assert other.returncode == 1 and "another visual graph" in other.stderr and "sha256" in other.stderr
    batching = embed(demo_bundle, many_photos, "--part-size", "32", "-o", out, "--resume", check=False)
    assert batching.returncode == 1 and "--batch-size 8" in batching.stderr
    fewer = embed(
        demo_bundle,
        f"{many_photos}/00[0-4]*.jpg",
        "--batch-size",
        "8",
        "--part-size",
        "32",
        "-o",
        out,
        "--resume",
        check=False,
    )
    assert fewer.returncode == 1 and "same SOURCEs" in fewer.stderr
    assert not out.exists()


def test_progress_bar_only_on_a_terminal(demo_bundle, photos, tmp_path):
    root, _ = photos
    quiet = embed(demo_bundle, root, "-o", tmp_path / "q.npy")
    assert quiet.stderr == ""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a fresh pty has 0 columns
    try:
        proc = subprocess.run(
            [*CLI, "embed", str(demo_bundle), str(root), "-o", str(tmp_path / "t.npy")],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
        )
        os.close(follower)
        follower = None
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower is not None:
            os.close(follower)
    assert proc.returncode == 0 and b"item/s" in shown and b"6/6" in shown


def test_embedding_a_folder_never_imports_torch_onnx_or_youtokentome(demo_bundle, photos, tmp_path):
    script = f"""
import sys
import clip_onnx.ray
from clip_onnx.batch import embed_dataset
summary = embed_dataset({str(demo_bundle)!r}, {str(tmp_path / "e.npy")!r}, sources=[{str(photos[0])!r}])
assert summary.embedded == 6, summary
print(",".join(m for m in ("torch", "onnx", "youtokentome", "pyarrow") if m in sys.modules) or "clean")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "clean", "npy output needs neither the exporter's packages nor pyarrow"
