"""Shards as the real tools write and read them: webdataset's TarWriter and reader, braceexpand, img2dataset
(its own command, downloading from a loopback http.server), and faiss over the parquet output.

webdataset, braceexpand and faiss-cpu are in the dev venv, img2dataset in
.cache/img2dataset-venv (its pins clash with the dev venv's); scripts/dev-setup.sh
installs all of them.
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from braceexpand import braceexpand

from clip_onnx.batch.shards import expand_braces
from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images
from tests.hardening import ROOT

CLI = [sys.executable, "-c", "from clip_onnx.cli import main; main()"]
IMG2DATASET = Path(ROOT) / ".cache" / "img2dataset-venv" / "bin" / "img2dataset"


def embed(*args, cwd=None):
    result = subprocess.run([*CLI, "embed", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def jpeg_bytes(img) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(demo_bundle):
    return ClipModel.load(demo_bundle)


def test_brace_expansion_is_braceexpands():
    patterns = [
        "shards/{00000..00012}.tar",
        "{0..10}.tar",
        "{00..3..2}-{a,b}",
        "{a..e..2}",
        "x{a,{b,c}d,}y",
        "{9..007}",
        "{-2..2}",
        "{-05..5..5}",
        "no braces.tar",
        "{single}",
        "{a,b}{1..3}{x,y}",
    ]
    for pattern in patterns:
        assert expand_braces(pattern) == list(braceexpand(pattern)), pattern


def test_shards_written_by_webdatasets_tarwriter(demo_bundle, model, tmp_path):
    images = synthetic_images(10, seed=1)
    captions = [f"фото номер {i}" for i in range(10)]
    (tmp_path / "shards").mkdir()
    for shard in range(2):
        with wds.TarWriter(str(tmp_path / "shards" / f"{shard:05d}.tar")) as sink:
            for i in range(shard * 5, shard * 5 + 5):
                sink.write(
                    {
                        "__key__": f"sample{i:06d}",
                        "jpg": jpeg_bytes(images[i]),
                        "txt": captions[i],
                        "json": {"url": f"https://example.org/{i}.jpg", "width": images[i].width},
                    }
                )
    pattern = "shards/{00000..00001}.tar"
    embed(demo_bundle, pattern, "--tower", "both", "-o", tmp_path / "both.parquet", cwd=tmp_path)
    table = pq.read_table(tmp_path / "both.parquet")
    # webdataset's own reader groups the same samples under the same keys, in the same order.
    samples = list(wds.WebDataset(str(tmp_path / pattern), shardshuffle=False, empty_check=False))
    ids = [f"shards/{Path(s['__url__']).name}:{s['__key__']}" for s in samples]
    assert table.column("id").to_pylist() == ids and len(ids) == 10
    assert table.column("url").to_pylist() == [json.loads(s["json"])["url"] for s in samples]
    assert table.column("caption").to_pylist() == [s["txt"].decode() for s in samples]
    image = np.asarray(table.column("image_embedding").to_pylist(), np.float32)
    text = np.asarray(table.column("text_embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(image, model.encode_image([s["jpg"] for s in samples]), atol=1e-6, rtol=0)
    np.testing.assert_allclose(text, model.encode_text([s["txt"].decode() for s in samples]), atol=1e-6, rtol=0)


@pytest.fixture()
def picture_server(tmp_path):
    """Local pictures served by http.server on 127.0.0.1 (port 0); yields the folder and the base URL."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, img in enumerate(synthetic_images(9, seed=12)):
        img.save(folder / f"{i}.jpg", quality=90)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - http.server's name
        pass


def test_img2dataset_shards_embed_and_faiss_finds_every_item_itself(demo_bundle, model, picture_server, tmp_path):
    import pyarrow as pa

    folder, base = picture_server
    urls = [f"{base}/{i}.jpg" for i in range(9)] + [f"{base}/missing.jpg"]
    pq.write_table(pa.table({"url": urls, "caption": [f"картинка {i}" for i in range(10)]}), tmp_path / "urls.parquet")
    if not IMG2DATASET.is_file():
        pytest.fail(f"{IMG2DATASET} is missing; run scripts/dev-setup.sh (it runs scripts/img2dataset-venv.sh)")
    command = [str(IMG2DATASET), "--url_list", str(tmp_path / "urls.parquet"), "--input_format", "parquet"]
    command += ["--url_col", "url", "--caption_col", "caption", "--output_format", "webdataset"]
    command += ["--output_folder", str(tmp_path / "shards"), "--number_sample_per_shard", "4"]
    # The pictures as served (no resizing, no re-encoding), one process, and nothing that needs a network.
    command += ["--resize_mode", "no", "--disable_all_reencoding", "True", "--processes_count", "1"]
    command += ["--thread_count", "2", "--enable_wandb", "False", "--distributor", "multiprocessing"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "no_proxy": "127.0.0.1"}
    downloaded = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert downloaded.returncode == 0, downloaded.stderr[-3000:]
    shards = sorted((tmp_path / "shards").glob("*.tar"))
    assert [s.name for s in shards] == ["00000.tar", "00001.tar", "00002.tar"], downloaded.stderr[-2000:]

    out = tmp_path / "photos.parquet"
    result = embed(demo_bundle, str(tmp_path / "shards" / "{00000..00002}.tar"), "-o", out)
    assert "embedded 9 of 9 items" in result.stdout
    table = pq.read_table(out)
    served = [u.rsplit("/", 1)[1] for u in table.column("url").to_pylist()]
    assert sorted(served) == [f"{i}.jpg" for i in range(9)], "every picture once, the missing one never"
    vectors = np.asarray(table.column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(vectors, model.encode_image([folder / n for n in served]), atol=1e-6, rtol=0)
    assert table.column("caption").to_pylist() == [f"картинка {n.split('.')[0]}" for n in served]

    index = faiss.IndexFlatIP(vectors.shape[1])  # inner product of unit vectors: cosine
    index.add(vectors)
    _, nearest = index.search(vectors, 1)
    assert nearest[:, 0].tolist() == list(range(len(vectors))), "each item finds itself first"
