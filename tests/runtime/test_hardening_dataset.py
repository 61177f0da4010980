"""`clip-onnx embed` / `embed_dataset` on what a crawler leaves behind: every bad input a typed error or an error row.

Each case of issue 22's table has a test here; every call that could hang runs
with a timeout (a subprocess, or ``call_within``), so a regression fails
instead of stalling the suite.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_onnx.batch import embed_dataset
from clip_onnx.errors import InputError
from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images
from tests.hardening import call_within

CLI = [sys.executable, "-c", "from clip_onnx.cli import main; main()"]


def embed(*args, timeout=120):
    return subprocess.run([*CLI, "embed", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def errors_of(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def model(demo_bundle):
    return ClipModel.load(demo_bundle)


@pytest.fixture()
def good(tmp_path):
    """Two small JPEGs outside the folder under test (links point at them)."""
    paths = [tmp_path / f"g{i}.jpg" for i in range(2)]
    for path, img in zip(paths, synthetic_images(2, seed=11), strict=True):
        img.save(path)
    return paths


# --- special files ---------------------------------------------------------------------------------------------


def test_fifos_devices_sockets_links_and_huge_files_are_error_rows_never_a_hang(demo_bundle, model, good, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(good[0].read_bytes())
    os.mkfifo(folder / "b.jpg")  # opening it for reading would wait for a writer forever
    (folder / "c.jpg").symlink_to(folder / "b.jpg")
    (folder / "d.jpg").symlink_to("/dev/zero")  # reading it never ends
    (folder / "e.jpg").write_bytes(os.urandom(300_000))  # over the --max-file-size given below
    (folder / "f.jpg").symlink_to(folder / "f.jpg")  # a link loop
    (folder / "g.jpg").symlink_to(good[1])
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "h.jpg"))
    try:
        result = embed(demo_bundle, folder, "-o", tmp_path / "e.npy", "--max-file-size", "100K")
    finally:
        server.close()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "" and "embedded 2 of 8 items, 6 failed" in result.stderr, "a failing run reports on stderr"
    assert (tmp_path / "e.ids.txt").read_text("utf-8").split() == [str(folder / "a.jpg"), str(folder / "g.jpg")]
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), model.encode_image(good), atol=1e-6, rtol=0)
    errors = {e["id"].rsplit("/", 1)[1]: (e["error"], e["message"]) for e in errors_of(tmp_path / "e.errors.jsonl")}
    assert {name: error for name, (error, _) in errors.items()} == {
        "b.jpg": "NotRegularFileError",
        "c.jpg": "NotRegularFileError",
        "d.jpg": "NotRegularFileError",
        "e.jpg": "FileTooLargeError",
        "f.jpg": "OSError",
        "h.jpg": "NotRegularFileError",
    }
    assert "named pipe (FIFO)" in errors["b.jpg"][1] and "named pipe" in errors["c.jpg"][1]
    assert "character device" in errors["d.jpg"][1] and "socket" in errors["h.jpg"][1]
    assert "293 KiB, over the 100 KiB limit" in errors["e.jpg"][1]


def test_a_fifo_given_as_an_image_a_text_file_a_list_or_a_table_never_blocks(demo_bundle, tmp_path):
    fifo = tmp_path / "p.jpg"
    os.mkfifo(fifo)
    result = embed(demo_bundle, "--image", fifo, "-o", tmp_path / "i.npy", timeout=60)
    assert result.returncode == 1 and "embedded 0 of 1 items, 1 failed" in result.stderr
    assert errors_of(tmp_path / "i.errors.jsonl")[0]["error"] == "NotRegularFileError"
    for name, args in (
        ("t.txt", ["--text-file"]),
        ("l.txt", []),
        ("t.parquet", ["--column", "text"]),
        ("t.csv", ["--column", "text"]),
    ):
        os.mkfifo(tmp_path / name)
        source = f"@{tmp_path / name}" if name == "l.txt" else tmp_path / name
        if args == ["--text-file"]:
            args, source = ["--text-file", source], None
        result = embed(demo_bundle, *([source] if source else []), *args, "-o", tmp_path / "o.npy", timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert "is a named pipe (FIFO), not a regular file" in lines[0] and lines[0].startswith("error: ")
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o.npy.partial").exists()


def test_the_size_cap_is_configurable_and_can_be_lifted(demo_bundle, good, tmp_path):
    out = tmp_path / "e.npy"
    capped = call_within(60, embed_dataset, demo_bundle, out, images=[str(good[0])], max_file_bytes=1000)
    assert (capped.embedded, capped.failed) == (0, 1)
    assert errors_of(tmp_path / "e.errors.jsonl")[0]["error"] == "FileTooLargeError"
    lifted = call_within(60, embed_dataset, demo_bundle, out, images=[str(good[0])], max_file_bytes=None)
    assert (lifted.embedded, lifted.failed) == (1, 0) and not (tmp_path / "e.errors.jsonl").exists()
    with pytest.raises(InputError, match="max_file_bytes must be an int >= 1"):
        embed_dataset(demo_bundle, out, images=[str(good[0])], max_file_bytes=0)


def test_a_file_name_that_is_not_utf8_fails_as_an_item_with_an_escaped_id(demo_bundle, model, good, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(good[0].read_bytes())
    latin1 = os.fsdecode(b"caf\xe9.jpg")
    (folder / latin1).write_bytes(good[1].read_bytes())
    for suffix in (".parquet", ".npy"):
        out = tmp_path / f"e{suffix}"
        result = embed(demo_bundle, folder, "-o", out)
        assert result.returncode == 1 and "embedded 1 of 2 items, 1 failed" in result.stderr, result.stderr
        [error] = errors_of(tmp_path / "e.errors.jsonl")
        assert error["id"] == str(folder / "caf\\xe9.jpg") and "not valid UTF-8" in error["message"]
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), model.encode_image(good[:1]), atol=1e-6, rtol=0)


# --- tables ----------------------------------------------------------------------------------------------------


def corrupt_row_group(source, target, group: int, column: int = 0) -> None:
    """Overwrite the start of one column chunk's pages in ``group``: the schema and footer stay intact."""
    chunk = pq.ParquetFile(source).metadata.row_group(group).column(column)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(source.read_bytes())
    data[start + 4 : start + 44] = b"\xff" * 40
    target.write_bytes(bytes(data))


def test_a_corrupt_parquet_page_fails_the_rows_of_its_row_group_with_their_range(demo_bundle, model, tmp_path):
    texts = [f"фото номер {i}" for i in range(30)]
    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.table({"text": texts}), whole, row_group_size=10, compression="NONE")
    corrupt_row_group(whole, tmp_path / "t.parquet", group=1)
    result = embed(demo_bundle, tmp_path / "t.parquet", "--column", "text", "-o", tmp_path / "e.parquet")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "embedded 20 of 30 items, 10 failed" in result.stderr
    table = pq.read_table(tmp_path / "e.parquet")
    kept = list(range(10)) + list(range(20, 30))
    assert table.column("id").to_pylist() == [f"{tmp_path / 't.parquet'}:{i}" for i in kept]
    vectors = np.asarray(table.column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(vectors, model.encode_text([texts[i] for i in kept]), atol=1e-6, rtol=0)
    errors = errors_of(tmp_path / "e.errors.jsonl")
    assert [e["id"].rsplit(":", 1)[1] for e in errors] == [str(i) for i in range(10, 20)]
    assert all(f"rows 10..19 of table {str(tmp_path / 't.parquet')!r} (row group 1)" in e["message"] for e in errors)


def test_bad_utf8_in_parquet_and_csv_fail_only_their_rows_and_a_long_csv_cell_embeds(demo_bundle, model, tmp_path):
    raw = pa.array([b"red star", b"\xff\xfe broken", b"blue ring"], pa.binary())
    strings = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())  # a writer that skipped validation
    pq.write_table(pa.table({"text": strings}), tmp_path / "t.parquet")
    long = "red " * 50_000  # 200,000 characters: over Python csv's field limit of 131,072
    (tmp_path / "t.csv").write_bytes(
        b"text\ngreen square\ncaf\xe9 latin-1\n" + long.encode() + b"\ntwo,fields\nyellow ring\n"
    )
    out = tmp_path / "e.parquet"
    result = embed(demo_bundle, tmp_path / "t.parquet", tmp_path / "t.csv", "--column", "text", "-o", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    ids = pq.read_table(out).column("id").to_pylist()
    assert [i.rsplit("/", 1)[1] for i in ids] == ["t.parquet:0", "t.parquet:2", "t.csv:0", "t.csv:2", "t.csv:4"]
    vectors = np.asarray(pq.read_table(out).column("embedding").to_pylist(), np.float32)
    expected = model.encode_text(["red star", "blue ring", "green square", long.strip(), "yellow ring"])
    np.testing.assert_allclose(vectors, expected, atol=1e-6, rtol=0)
    errors = {e["id"].rsplit("/", 1)[1]: e["message"] for e in errors_of(tmp_path / "e.errors.jsonl")}
    assert sorted(errors) == ["t.csv:1", "t.csv:3", "t.parquet:1"]
    assert "utf-8" in errors["t.parquet:1"].lower() and "not valid UTF-8" in errors["t.csv:1"]
    assert "row 3 of table" in errors["t.csv:3"] and "expected 1 fields, got 2" in errors["t.csv:3"]


def test_a_table_that_cannot_be_read_at_all_is_one_error_line(demo_bundle, tmp_path):
    (tmp_path / "t.parquet").write_bytes(b"PAR1 not really")
    result = embed(demo_bundle, tmp_path / "t.parquet", "--column", "text", "-o", tmp_path / "e.npy")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: cannot read parquet table")


# --- resume after damage ---------------------------------------------------------------------------------------

ARGS = {"batch_size": 4, "part_size": 8, "workers": 1}


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(1)
    from PIL import Image

    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(root / f"{i:03d}.jpg")
    (root / "013.jpg").write_bytes(b"broken")
    return root


@pytest.fixture(scope="module")
def uninterrupted(demo_bundle, small_photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "e.parquet"
    embed_dataset(demo_bundle, out, sources=[str(small_photos)], **ARGS)
    return out


def stopped_run(demo_bundle, small_photos, out) -> list:
    """A run interrupted after its fourth part (32 of 40 items); returns the part files, oldest first."""

    def stop(done, total):
        if done >= 32:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_dataset(demo_bundle, out, sources=[str(small_photos)], progress=stop, **ARGS)
    parts = sorted(out.with_name(out.name + ".partial").glob("part-*.npz"))
    assert len(parts) == 4 and not out.exists()
    return parts


def damage(kind: str, parts: list, state) -> int:
    """Damage the staging folder; returns how many items must stay resumed (the whole parts before the damage)."""
    if kind == "truncated part":
        parts[2].write_bytes(parts[2].read_bytes()[:-100])
    elif kind == "emptied part":
        parts[1].write_bytes(b"")
    elif kind == "altered part":
        data = bytearray(parts[3].read_bytes())
        data[len(data) // 2] ^= 0xFF
        parts[3].write_bytes(bytes(data))
    elif kind == "missing part":
        parts[1].unlink()
    elif kind == "unrecorded part":  # a state.json restored from an older copy
        saved = json.loads(state.read_text("utf-8"))
        del saved["parts"][parts[3].name]
        state.write_text(json.dumps(saved), "utf-8")
    elif kind == "garbage state":
        state.write_bytes(b"\x00{not json")
    elif kind == "empty state":
        state.write_bytes(b"")
    elif kind == "no state":
        state.unlink()
    elif kind == "state of another shape":
        state.write_text("[1, 2, 3]", "utf-8")
    first_bad = {"truncated part": 2, "emptied part": 1, "altered part": 3, "missing part": 1, "unrecorded part": 3}
    return 8 * first_bad.get(kind, 0)


KINDS = [
    "truncated part",
    "emptied part",
    "altered part",
    "missing part",
    "unrecorded part",
    "garbage state",
    "empty state",
    "no state",
    "state of another shape",
]


@pytest.mark.parametrize("kind", KINDS)
def test_resume_embeds_damaged_parts_again_and_writes_the_uninterrupted_file(
    kind, demo_bundle, small_photos, uninterrupted, tmp_path, caplog
):
    out = tmp_path / "e.parquet"
    parts = stopped_run(demo_bundle, small_photos, out)
    kept = damage(kind, parts, tmp_path / "e.parquet.partial" / "state.json")
    with caplog.at_level(logging.WARNING, logger="clip_onnx.batch.parts"):
        summary = call_within(60, embed_dataset, demo_bundle, out, sources=[str(small_photos)], resume=True, **ARGS)
    assert summary.resumed == kept and (summary.embedded, summary.failed) == (39, 1)
    assert "embedded again" in caplog.text
    assert out.read_bytes() == uninterrupted.read_bytes()
    assert (tmp_path / "e.errors.jsonl").read_bytes() == uninterrupted.with_name("e.errors.jsonl").read_bytes()
    assert not (tmp_path / "e.parquet.partial").exists()


def test_a_resume_that_is_stopped_in_turn_keeps_the_parts_it_verified(
    demo_bundle, small_photos, uninterrupted, tmp_path
):
    out = tmp_path / "e.parquet"
    parts = stopped_run(demo_bundle, small_photos, out)
    parts[3].write_bytes(b"")  # the fourth part is embedded again by the first resume

    def stop_again(done, total):
        if done >= 36:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_dataset(demo_bundle, out, sources=[str(small_photos)], resume=True, progress=stop_again, **ARGS)
    state = json.loads((tmp_path / "e.parquet.partial" / "state.json").read_text("utf-8"))
    assert sorted(state["parts"]) == [p.name for p in parts], "the three kept parts and the one made again"
    summary = embed_dataset(demo_bundle, out, sources=[str(small_photos)], resume=True, **ARGS)
    assert summary.resumed == 32 and out.read_bytes() == uninterrupted.read_bytes()


def test_resume_after_an_emptied_part_on_the_command_line_is_no_abort(
    demo_bundle, small_photos, uninterrupted, tmp_path
):
    out = tmp_path / "e.parquet"
    parts = stopped_run(demo_bundle, small_photos, out)
    parts[0].write_bytes(b"")  # np.load raises EOFError on it, which click took for Ctrl-D ("Aborted!")
    args = ["--batch-size", "4", "--part-size", "8", "--workers", "1", "--skip-bad", "--resume"]
    result = embed(demo_bundle, small_photos, "-o", out, *args)
    assert result.returncode == 0 and "Aborted" not in result.stderr, result.stderr
    assert "part-000000000000-000000000008.npz (empty)" in result.stderr
    assert out.read_bytes() == uninterrupted.read_bytes()


# --- Python API and the command line's conventions -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"texts": "кошка"}, "texts must be a list of texts, got the single str 'кошка'; pass ['кошка']"),
        ({"sources": "/"}, "sources must be a list of paths, got the single str '/'"),
        ({"images": b"a.jpg"}, "images must be a list of paths, got the single bytes"),
        ({"text_files": "t.txt"}, "text_files must be a list of paths"),
        ({"sources": [3]}, "sources must hold paths (str or os.PathLike), got int 3"),
        ({"texts": 5}, "texts must be a list of texts, got int"),
    ],
)
def test_a_bare_value_where_a_list_is_meant_is_refused(demo_bundle, tmp_path, kwargs, fragment):
    with pytest.raises(InputError) as error:
        call_within(30, embed_dataset, demo_bundle, tmp_path / "e.npy", **kwargs)
    assert fragment in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_path_objects_are_accepted_as_sources(demo_bundle, good, tmp_path):
    summary = embed_dataset(demo_bundle, tmp_path / "e.npy", sources=[good[0]], images=[good[1]])
    assert summary.embedded == 2


def test_exit_codes_usage_error_2_other_errors_1_with_one_line(demo_bundle, good, tmp_path):
    usage = embed(demo_bundle, good[0], "-o", tmp_path / "e.npy", "--no-such-option")
    assert usage.returncode == 2 and "Usage:" in usage.stderr and "No such option" in usage.stderr
    missing = embed(demo_bundle, good[0])
    assert missing.returncode == 2 and "Missing option '-o'" in missing.stderr
    mistake = embed(demo_bundle, good[0], "-o", tmp_path / "nowhere" / "e.npy")
    assert mistake.returncode == 1 and mistake.stderr.startswith("error: ") and len(mistake.stderr.splitlines()) == 1
    size = embed(demo_bundle, good[0], "-o", tmp_path / "e.npy", "--max-file-size", "lots")
    assert size.returncode == 2 and "not a size: 'lots'" in size.stderr
    done = embed(demo_bundle, good[0], "-o", tmp_path / "e.npy")
    assert done.returncode == 0 and "embedded 1 of 1 items" in done.stdout and done.stderr == ""
