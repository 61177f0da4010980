"""The Ray Data job on a real local Ray (2 CPUs, started once per session) with real ONNX Runtime actors."""

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.data
from click.testing import CliRunner

from clip_onnx.cli import cli
from clip_onnx.errors import BundleError, InputError, JobError
from clip_onnx.ray import ClipEmbedder, embed_texts, plan_actors, run_ray_embed
from clip_onnx.ray.job import _read
from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images
from tests.hardening import call_within


@pytest.fixture(scope="session")
def local_ray():
    # "local": a Ray of its own, never a cluster some other run left in /tmp/ray/ray_current_cluster.
    ray.init(address="local", num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False)
    yield
    ray.shutdown()


def ray_embed(*args):
    return CliRunner().invoke(cli, ["ray-embed", *map(str, args)], catch_exceptions=False)


def read_rows(folder):
    table = pq.read_table(folder)
    pairs = zip(table.column("embedding").to_pylist(), table.column("error").to_pylist(), strict=True)
    rows = dict(zip(table.column("id").to_pylist(), pairs, strict=True))
    assert len(rows) == table.num_rows, "ids must be unique"
    return rows, table.schema


def test_folder_of_images_with_a_corrupt_one(local_ray, demo_bundle, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    paths = [folder / f"{i}.jpg" for i in range(5)] + [folder / "sub" / "5.png"]
    for path, img in zip(paths, synthetic_images(len(paths), seed=5), strict=True):
        img.save(path)
    (folder / "corrupt.jpg").write_bytes(paths[0].read_bytes()[:500])
    os.mkfifo(folder / "pipe.jpg")  # a read task that opened it would wait for a writer forever
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / os.fsdecode(b"caf\xe9.jpg")).write_bytes(paths[1].read_bytes())  # a Latin-1 file name
    result = ray_embed(demo_bundle, folder, "-o", tmp_path / "out")
    assert result.exit_code == 1, "a failed row makes the exit code 1 without --skip-bad"
    assert "embedded 6 of 10 rows, 4 failed" in result.stderr and result.stdout == ""
    rows, schema = read_rows(tmp_path / "out")
    assert schema.field("embedding").type == pa.list_(pa.float32(), 64)
    embedding, error = rows.pop(str(folder / "corrupt.jpg"))
    assert embedding is None and error.startswith("InputError: cannot decode")
    assert rows.pop(str(folder / "pipe.jpg")) == (
        None,
        f"NotRegularFileError: {str(folder / 'pipe.jpg')!r} is a named pipe (FIFO), not a regular file",
    )
    assert rows.pop(str(folder / "zero.jpg"))[1].endswith("is a character device, not a regular file")
    assert rows.pop(str(folder / "caf\\xe9.jpg"))[1].startswith("InputError: the name is not valid UTF-8")
    expected = ClipModel.load(demo_bundle).encode_image(paths)
    assert sorted(rows) == sorted(map(str, paths)) and all(e is None for _, e in rows.values())
    got = np.asarray([rows[str(p)][0] for p in paths], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_text_parquet_through_the_python_api(local_ray, demo_bundle, tmp_path):
    texts = ["красная звезда", "синий круг", "фото жёлтого кольца", None]
    source = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "text": texts, "other": [1, 2, 3, 4]}), source)
    ds = ray.data.read_parquet(str(source)).select_columns(["id", "text"])
    rows = {r["id"]: r for r in embed_texts(ds, demo_bundle, actors=1, cpus_per_actor=1, id_column="id").take_all()}
    assert sorted(rows) == list("abcd")
    assert rows["d"]["embedding"] is None and rows["d"]["error"] == "InputError: empty cell"
    got = np.asarray([rows[k]["embedding"] for k in "abc"], dtype=np.float32)
    np.testing.assert_allclose(got, ClipModel.load(demo_bundle).encode_text(texts[:3]), atol=1e-6, rtol=0)
    assert all(rows[k]["error"] is None for k in "abc")
    # What ray-embed reads from that file: the text column, named by the id column.
    _, tower, column, id_column, rows = _read(str(source), None)
    assert (tower, column, id_column, rows) == ("textual", "text", "id", 4)


def test_a_parquet_source_that_is_not_a_regular_file_is_refused_before_ray_reads_it(tmp_path):
    os.mkfifo(tmp_path / "rows.parquet")  # Ray's parquet reader would wait for a writer forever
    with pytest.raises(InputError, match=r"parquet SOURCE '.*rows\.parquet' is a named pipe \(FIFO\), not a regular"):
        call_within(30, _read, str(tmp_path / "rows.parquet"), None)
    with pytest.raises(InputError, match=r"parquet SOURCE '.*missing\.parquet' does not exist"):
        _read(str(tmp_path / "missing.parquet"), None)


def test_the_pool_is_planned_against_the_nodes_and_may_take_every_cpu(local_ray, demo_bundle, tmp_path):
    assert plan_actors(None, 1) == 1 and plan_actors(None, 0.5) == 2, "by default one CPU stays free"
    assert plan_actors(None, 2) == 1, "an actor as large as the only node still gets it"
    with pytest.raises(InputError, match=r"3 actors x 1 CPUs do not fit.*2 CPUs in all.*--actors 2 or fewer"):
        plan_actors(3, 1)
    with pytest.raises(
        InputError, match=r"no node of the cluster has 3 CPUs \(the largest has 2\).*--cpus-per-actor 2"
    ):
        plan_actors(None, 3)
    # Reads and writes reserve no CPU, so a pool that holds every CPU still finishes (ray issue 44687 hung it).
    (tmp_path / "photos").mkdir()
    paths = [tmp_path / "photos" / f"{i}.jpg" for i in range(4)]
    for path, img in zip(paths, synthetic_images(4), strict=True):
        img.save(path)
    result = ray_embed(
        demo_bundle, tmp_path / "photos", "-o", tmp_path / "out", "--actors", "2", "--stall-timeout", "60"
    )
    assert result.exit_code == 0 and "embedded 4 of 4 rows with 2 actor(s)" in result.stdout, result.output
    refused = ray_embed(demo_bundle, tmp_path / "photos", "-o", tmp_path / "out2", "--actors", "3")
    assert refused.exit_code == 1 and "do not fit" in refused.stderr and not (tmp_path / "out2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"], "nothing may be left behind"


def test_a_pool_that_cannot_be_placed_ends_in_a_job_error_in_a_session_the_caller_owns(
    local_ray, demo_bundle, tmp_path
):
    """Another job holds both CPUs: the pool's actor stays pending, which Ray Data would wait for forever."""
    (tmp_path / "photos").mkdir()
    synthetic_images(1)[0].save(tmp_path / "photos" / "a.jpg")
    hold = ray.remote(num_cpus=2)(_Hold).remote()
    ray.get(hold.ready.remote())
    started = time.monotonic()
    try:
        with pytest.raises(JobError):
            run_ray_embed(demo_bundle, tmp_path / "photos", tmp_path / "out", actors=1, stall_timeout=5)
    finally:
        ray.kill(hold)
    assert time.monotonic() - started < 60
    time.sleep(2)  # a job left running would now get its actor and write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"], "nothing written, nothing left behind"


class _Hold:
    def ready(self) -> bool:
        return True


def test_an_actor_says_which_node_lacks_the_bundle(tmp_path):
    with pytest.raises(BundleError, match=r"node .* \(id .*\) cannot open bundle .*every node of the cluster needs"):
        ClipEmbedder(str(tmp_path / "nowhere"), "visual", "bytes", "path", threads=1, batch_size=8)


def test_shards_on_ray_give_the_ids_and_rows_that_embed_writes(local_ray, demo_bundle, tmp_path):
    import json

    from clip_onnx.batch import EmbedOptions, embed_dataset
    from tests.runtime.test_shards import sample, write_shard

    images = synthetic_images(7, seed=44)
    for shard in range(2):
        members = [
            m for i in range(shard * 3, shard * 3 + 3) for m in sample(f"k{i}", images[i], f"подпись {i}", f"u{i}")
        ]
        write_shard(tmp_path / f"{shard:05d}.tar", members + [("bad.jpg", b"not a picture"), ("bad.txt", b"x")])
    data = (tmp_path / "00000.tar").read_bytes()
    (tmp_path / "00002.tar").write_bytes(data[: len(data) // 2])  # truncated
    pattern = str(tmp_path / "{00000..00003}.tar")  # 00003.tar is missing
    for tower, decode in (("both", "exact"), ("image", "draft")):
        out = tmp_path / f"ray-{tower}"
        summary = run_ray_embed(demo_bundle, pattern, out, actors=1, tower=tower, decode=decode, batch_size=4)
        options = EmbedOptions(tower=tower, decode=decode, workers=1, batch_size=4)
        local = embed_dataset(demo_bundle, tmp_path / f"{tower}.parquet", options, sources=[pattern])
        assert (summary.rows, summary.failed) == (local.total, local.failed) and local.failed == 4
        table = pq.read_table(out)
        rows = {r["id"]: r for r in table.to_pylist()}
        assert len(rows) == table.num_rows == local.total, "every id once"
        expected = {r["id"]: r for r in pq.read_table(tmp_path / f"{tower}.parquet").to_pylist()}
        errors = [json.loads(line) for line in open(tmp_path / f"{tower}.errors.jsonl", encoding="utf-8")]
        assert {i: rows[i]["error"] for i in rows if rows[i]["error"]} == {
            e["id"]: f"{e['error']}: {e['message']}" for e in errors
        }
        for item_id, row in expected.items():
            got = rows[item_id]
            assert (got["url"], got["caption"], got["error"]) == (row["url"], row["caption"], None)
            for column in [c for c in row if c.endswith("embedding")]:
                np.testing.assert_allclose(got[column], row[column], atol=1e-6, rtol=0)


def test_ray_embed_refuses_a_column_for_shards_and_a_tower_for_other_sources(tmp_path):
    with pytest.raises(InputError, match="names webdataset shards; --column is for parquet"):
        _read(str(tmp_path / "{0..1}.tar"), "bytes")
    with pytest.raises(InputError, match="--tower is for webdataset shards"):
        _read(str(tmp_path), None, tower="text")
