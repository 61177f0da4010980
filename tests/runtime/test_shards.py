"""webdataset shards as a SOURCE of `clip-onnx embed`, written here with the standard library's tarfile.

The shards of real tools (webdataset's TarWriter, img2dataset) are in
tests/serving/test_shards_tools.py; this tier runs without them (the
runtime-only install).  Every case of issue 28's bad-shard table is here, and
so are resume across shards and `--decode draft`.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clip_onnx.batch import EmbedOptions, embed_dataset
from clip_onnx.batch.shards import count_items, expand_braces
from clip_onnx.errors import InputError
from clip_onnx.runtime import ClipModel
from clip_onnx.runtime.images import load_drafted
from clip_onnx.synthetic import synthetic_images

CLI = [sys.executable, "-c", "from clip_onnx.cli import main; main()"]


def embed(*args, cwd=None, timeout=120):
    return subprocess.run([*CLI, "embed", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_shard(path, members) -> list[tarfile.TarInfo]:
    """A tar of ``members`` (name, bytes) in order, as the standard library writes it; returns their headers."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        return tar.getmembers()


def sample(key: str, img: Image.Image, caption: str, url: str | None = None) -> list[tuple[str, bytes]]:
    meta = json.dumps({"url": url, "key": key}).encode() if url else None
    return [(f"{key}.jpg", jpeg(img)), (f"{key}.txt", caption.encode()), *([(f"{key}.json", meta)] if meta else [])]


def errors_of(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def model(demo_bundle):
    return ClipModel.load(demo_bundle)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two shards of four samples each, in img2dataset's layout (jpg, txt, json with the url)."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "shards").mkdir()
    images = synthetic_images(8, seed=28)
    captions = [f"фото {i}: красная звезда" if i % 2 else f"синий круг {i}" for i in range(8)]
    samples = []
    for shard in range(2):
        members = []
        for i in range(shard * 4, shard * 4 + 4):
            key = f"{shard:05d}{i:04d}"
            members += sample(key, images[i], captions[i], f"http://127.0.0.1/{i}.jpg")
            samples.append((f"shards/{shard:05d}.tar:{key}", members[-3][1], captions[i], f"http://127.0.0.1/{i}.jpg"))
        write_shard(root / "shards" / f"{shard:05d}.tar", members)
    return root, samples


def test_brace_ranges_expand_as_webdataset_names_them():
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{8..11}") == ["8", "9", "10", "11"], "no padding without a leading zero"
    assert expand_braces("{09..11}") == ["09", "10", "11"]
    assert expand_braces("{0..6..3}{a,b}") == ["0a", "0b", "3a", "3b", "6a", "6b"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("x{a,{b,c}d}y") == ["xay", "xbdy", "xcdy"]
    assert expand_braces("{x}.tar") == ["{x}.tar"] and expand_braces("a{1..2") == ["a{1..2"]


def test_image_text_and_both_towers_over_a_brace_range(demo_bundle, model, corpus, tmp_path):
    root, samples = corpus
    ids = [s[0] for s in samples]
    pattern = "shards/{00000..00001}.tar"  # relative: ids keep the shard as the user wrote it
    image = embed(demo_bundle, pattern, "-o", tmp_path / "i.parquet", cwd=root)
    assert image.returncode == 0 and "embedded 8 of 8 items" in image.stdout, image.stderr
    table = pq.read_table(tmp_path / "i.parquet")
    assert table.column_names == ["id", "embedding", "url", "caption"] and table.column("id").to_pylist() == ids
    assert table.column("url").to_pylist() == [s[3] for s in samples]
    assert table.column("caption").to_pylist() == [s[2] for s in samples]
    got = np.asarray(table.column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(got, model.encode_image([s[1] for s in samples]), atol=1e-6, rtol=0)

    options = EmbedOptions(tower="text", workers=1)
    summary = embed_dataset(demo_bundle, tmp_path / "t.parquet", options, sources=[str(root / "shards" / "*.tar")])
    assert summary.embedded == 8 and summary.failed == 0
    texts = pq.read_table(tmp_path / "t.parquet")
    assert texts.column("id").to_pylist() == [str(root / i) for i in ids]
    got = np.asarray(texts.column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(got, model.encode_text([s[2] for s in samples]), atol=1e-6, rtol=0)

    both = embed(demo_bundle, pattern, "--tower", "both", "-o", tmp_path / "b.parquet", cwd=root)
    assert both.returncode == 0, both.stderr
    pairs = pq.read_table(tmp_path / "b.parquet")
    assert pairs.column_names == ["id", "image_embedding", "text_embedding", "url", "caption"]
    assert pairs.column("id").to_pylist() == ids
    for column, expected in (("image_embedding", table), ("text_embedding", texts)):
        np.testing.assert_array_equal(pairs.column(column).to_pylist(), expected.column("embedding").to_pylist())
    refused = embed(demo_bundle, pattern, "--tower", "both", "-o", tmp_path / "b.npy", cwd=root)
    assert refused.returncode == 1 and "--tower both writes parquet" in refused.stderr


def test_a_gzipped_shard_gives_the_same_rows(demo_bundle, corpus, tmp_path):
    root, samples = corpus
    data = (root / "shards" / "00000.tar").read_bytes()
    import gzip

    (tmp_path / "00000.tar.gz").write_bytes(gzip.compress(data))
    (tmp_path / "00000.tar").write_bytes(data)
    for name in ("00000.tar", "00000.tar.gz"):
        embed_dataset(demo_bundle, tmp_path / f"{name}.parquet", sources=[str(tmp_path / name)], workers=1)
    plain, gzipped = (pq.read_table(tmp_path / f"{n}.parquet") for n in ("00000.tar", "00000.tar.gz"))
    assert [i.split(":")[1] for i in gzipped.column("id").to_pylist()] == [s[0].split(":")[1] for s in samples[:4]]
    assert gzipped.column("embedding").to_pylist() == plain.column("embedding").to_pylist()


def _bomb_png() -> bytes:
    """A PNG whose header claims 100000 x 100000 pixels: past Pillow's decompression-bomb limit."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bad_shards(tmp_path_factory):
    """Issue 28's table of bad shards, each a file of its own beside two good samples."""
    root = tmp_path_factory.mktemp("bad")
    img = synthetic_images(6, seed=7)
    good = sample("a", img[0], "красная звезда", "http://127.0.0.1/a.jpg")
    members = [
        *good,
        ("b.jpg", b"not a picture at all"),
        ("b.txt", b"garbage"),
        ("c.txt", "подпись без картинки".encode()),  # no image member
        ("d.jpg", jpeg(img[1])),
        ("d.txt", b"caf\xe9 latin-1"),  # not UTF-8: the image embeds, the text tower fails it
        ("e.png", _bomb_png()),
        ("e.txt", b"bomb"),
        ("f.jpg", jpeg(img[2])),  # no caption: the image embeds, the text tower fails it
        ("__index__", b"webdataset metadata, skipped"),
        ("g.jpg", jpeg(Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), np.uint8)))),
        ("g.txt", b"big"),  # g.jpg is over --max-file-size
        ("a.jpg", jpeg(img[4])),  # "a" again: a duplicate key
        ("a.txt", b"duplicate"),
        ("h.jpg", jpeg(img[5])),
        ("h.txt", "жёлтое кольцо".encode()),
    ]
    write_shard(root / "mixed.tar", members)
    headers = write_shard(root / "whole.tar", [*good, *sample("b", img[1], "синий круг"), *sample("c", img[2], "ок")])
    data = (root / "whole.tar").read_bytes()
    assert [h.name for h in headers] == ["a.jpg", "a.txt", "a.json", "b.jpg", "b.txt", "c.jpg", "c.txt"]
    (root / "cut-in-data.tar").write_bytes(data[: headers[4].offset_data + 5])  # inside b.txt's data
    (root / "cut-at-member.tar").write_bytes(data[: headers[5].offset])  # after b whole: no end of archive
    broken = bytearray(data)
    broken[headers[5].offset : headers[5].offset + 512] = b"\x17" * 512  # c.jpg's header overwritten
    (root / "bad-header.tar").write_bytes(bytes(broken))
    (root / "not-a-tar.tar").write_bytes(jpeg(img[0]))
    os.mkfifo(root / "fifo.tar")  # opening it for reading would wait for a writer forever
    return root, headers[4].offset, headers[5].offset


def test_every_bad_shard_and_sample_is_recorded_never_a_crash_hang_or_wrong_row(demo_bundle, model, bad_shards):
    root, b_txt_at, c_at = bad_shards
    out = root / "out.parquet"
    names = ["mixed", "cut-in-data", "cut-at-member", "bad-header", "not-a-tar", "missing", "fifo"]
    pattern = str(root / ("{" + ",".join(names) + "}.tar"))
    result = embed(demo_bundle, pattern, "--max-file-size", "100K", "-o", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "embedded 9 of 20 items, 11 failed" in result.stderr
    shard = {n: str(root / f"{n}.tar") for n in names}
    rows = pq.read_table(out)
    ids = rows.column("id").to_pylist()
    kept = {"mixed": "adfh", "cut-in-data": "a", "cut-at-member": "ab", "bad-header": "ab"}
    assert ids == [f"{shard[name]}:{key}" for name, keys in kept.items() for key in keys]
    errors = {e["id"]: (e["error"], e["message"]) for e in errors_of(root / "out.errors.jsonl")}
    mixed = shard["mixed"]
    assert errors[f"{mixed}:b"][1].startswith("cannot decode image bytes")
    assert errors[f"{mixed}:c"][1].startswith("no image member (.jpg, .jpeg, .png, .webp); the key has .txt")
    assert "too large to decode safely" in errors[f"{mixed}:e"][1]
    assert errors[f"{mixed}:g"][0] == "FileTooLargeError" and "over the 100 KiB limit" in errors[f"{mixed}:g"][1]
    assert errors[f"{mixed}:a"][1].startswith("duplicate key 'a'")
    assert f"damaged in member 'b.txt' (header at byte {b_txt_at})" in errors[shard["cut-in-data"]][1]
    assert "1 sample(s) before it are embedded" in errors[shard["cut-in-data"]][1]
    assert f"damaged at byte {c_at}: empty header" in errors[shard["cut-at-member"]][1]
    assert f"damaged at byte {c_at}: " in errors[shard["bad-header"]][1]
    assert "where a header should be; the 2 sample(s) before it are embedded" in errors[shard["bad-header"]][1]
    assert "is not a tar file" in errors[shard["not-a-tar"]][1]
    assert errors[shard["missing"]][0] == "FileNotFoundError"
    assert errors[shard["fifo"]] == (
        "NotRegularFileError",
        f"{shard['fifo']!r} is a named pipe (FIFO), not a regular file",
    )
    assert len(errors) == 11
    caption = dict(zip(ids, rows.column("caption").to_pylist(), strict=True))
    assert caption[f"{mixed}:d"] is None and caption[f"{mixed}:f"] is None, "a caption that is not text is null"
    # What was embedded is what ClipModel gives for the very members.
    with tarfile.open(mixed) as tar:  # the first a.jpg: the duplicate "a" comes later
        data = {}
        for member in tar.getmembers():
            data.setdefault(member.name[0], tar.extractfile(member).read())
    got = np.asarray(rows.column("embedding").to_pylist()[:4], np.float32)
    np.testing.assert_allclose(got, model.encode_image([data[k] for k in "adfh"]), atol=1e-6, rtol=0)
    assert count_items(shard["cut-in-data"]) == 2 and count_items(shard["bad-header"]) == 3


def test_the_text_tower_fails_samples_without_a_usable_caption(demo_bundle, model, bad_shards, tmp_path):
    root, _, _ = bad_shards
    summary = embed_dataset(
        demo_bundle, tmp_path / "t.parquet", EmbedOptions(tower="text", workers=1), sources=[str(root / "mixed.tar")]
    )
    errors = {e["id"].rsplit(":", 1)[1]: e["message"] for e in errors_of(tmp_path / "t.errors.jsonl")}
    assert sorted(errors) == ["a", "d", "f"] and (summary.embedded, summary.failed) == (6, 3)
    assert errors["d"] == "not valid UTF-8 text: byte 'e9' at character 3" and errors["f"] == "no caption (.txt member)"
    got = np.asarray(pq.read_table(tmp_path / "t.parquet").column("embedding").to_pylist(), np.float32)
    expected = model.encode_text(["красная звезда", "garbage", "подпись без картинки", "bomb", "big", "жёлтое кольцо"])
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_resume_across_shards_writes_the_file_an_uninterrupted_run_writes(demo_bundle, corpus, tmp_path):
    root, _ = corpus
    sources = [str(root / "shards" / "{00000..00001}.tar")]
    args = {"batch_size": 2, "part_size": 3, "workers": 1}
    whole = tmp_path / "whole.parquet"
    embed_dataset(demo_bundle, whole, sources=sources, **args)

    def stop(done, total):
        if done >= 5:  # the first part (3 items) is whole, the second crosses into the next shard
            raise KeyboardInterrupt

    out = tmp_path / "resumed.parquet"
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(demo_bundle, out, sources=sources, progress=stop, **args)
    assert not out.exists() and len(list((tmp_path / "resumed.parquet.partial").glob("part-*.npz"))) == 1
    summary = embed_dataset(demo_bundle, out, sources=sources, resume=True, **args)
    assert summary.resumed == 3 and out.read_bytes() == whole.read_bytes()


@pytest.fixture(scope="module")
def large_jpegs(tmp_path_factory):
    """Photo-like JPEGs of 1600 x 1200 (and one portrait), far larger than the demo's 64 px input."""
    root = tmp_path_factory.mktemp("large")
    paths = []
    for i, img in enumerate(synthetic_images(6, seed=61)):
        size = (1200, 1600) if i == 0 else (1600, 1200)
        noisy = np.asarray(img.resize(size, Image.Resampling.BICUBIC), np.float32)
        noisy += np.random.default_rng(i).normal(0, 8, noisy.shape)
        paths.append(root / f"{i}.jpg")
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(paths[-1], quality=90)
    return paths


def test_decode_draft_reduces_large_jpegs_and_stays_close_to_exact(model, large_jpegs, tmp_path):
    img, drafted = load_drafted(large_jpegs[1], 2 * 64)
    assert drafted is not None and drafted.scale == 8 and drafted.size == (1600, 1200) and img.size == (200, 150)
    exact = model.encode_image(large_jpegs)
    draft = model.encode_image(large_jpegs, decode="draft")
    cosine = (exact * draft).sum(axis=1)
    assert cosine.min() >= 0.999 and not np.array_equal(exact, draft), cosine
    # A PNG, and a JPEG too small to reduce, decode exactly under "draft".
    small = synthetic_images(2, seed=5)
    small[0].save(tmp_path / "p.png")
    small[1].resize((120, 100)).save(tmp_path / "s.jpg")
    plain = [tmp_path / "p.png", tmp_path / "s.jpg"]
    np.testing.assert_array_equal(model.encode_image(plain, decode="draft"), model.encode_image(plain))
    with pytest.raises(InputError, match=r"decode must be one of \('exact', 'draft'\), got 'fast'"):
        model.encode_image(plain, decode="fast")


def test_embed_decode_draft_equals_clipmodel_and_resume_keeps_the_decode(demo_bundle, model, large_jpegs, tmp_path):
    shard = tmp_path / "large.tar"
    write_shard(shard, [(f"{i}.jpg", p.read_bytes()) for i, p in enumerate(large_jpegs)])
    result = embed(demo_bundle, shard, "--decode", "draft", "--part-size", "4", "-o", tmp_path / "d.parquet")
    assert result.returncode == 0, result.stderr
    got = np.asarray(pq.read_table(tmp_path / "d.parquet").column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(got, model.encode_image(large_jpegs, decode="draft"), atol=1e-6, rtol=0)

    def stop(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    out = tmp_path / "e.parquet"
    options = {"batch_size": 2, "part_size": 4, "workers": 1}
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(demo_bundle, out, sources=[str(shard)], decode="draft", progress=stop, **options)
    with pytest.raises(InputError, match="used --decode draft; resume with the same --decode"):
        embed_dataset(demo_bundle, out, sources=[str(shard)], resume=True, **options)


def test_tower_both_takes_shards_only_and_a_shard_glob_must_match(corpus, tmp_path):
    from clip_onnx.batch import plan_sources

    root, _ = corpus
    shard = str(root / "shards" / "00000.tar")
    assert plan_sources([shard], tower="both").tower == "both"
    with pytest.raises(InputError, match="--tower both embeds the image and the caption of each sample"):
        plan_sources([shard, str(tmp_path)], tower="both")
    with pytest.raises(InputError, match=r"glob '.*/\*\.tar' matches no shards"):
        plan_sources([str(tmp_path / "*.tar")])
