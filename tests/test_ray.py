"""The Ray Data job on a real local Ray (2 CPUs, started once per session) with real ONNX Runtime actors."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.data
from click.testing import CliRunner

from clip_onnx.cli import cli
from clip_onnx.errors import BundleError, InputError
from clip_onnx.ray import ClipEmbedder, _read, embed_texts, plan_actors
from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images


@pytest.fixture(scope="session")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False)
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
    result = ray_embed(demo_bundle, folder, "-o", tmp_path / "out")
    assert result.exit_code == 1, "a failed row makes the exit code 1 without --skip-bad"
    assert "embedded 6 of 7 rows, 1 failed" in result.output
    rows, schema = read_rows(tmp_path / "out")
    assert schema.field("embedding").type == pa.list_(pa.float32(), 64)
    embedding, error = rows.pop(str(folder / "corrupt.jpg"))
    assert embedding is None and error.startswith("InputError: cannot decode")
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
    _, tower, column, id_column = _read(str(source), None)
    assert (tower, column, id_column) == ("textual", "text", "id")


def test_a_pool_that_takes_every_cpu_is_refused_or_sized_down(local_ray, demo_bundle, tmp_path):
    with pytest.raises(InputError, match=r"2 actors x 1 CPUs reserve 2 of the cluster's 2 CPUs.*44687.*--actors 1"):
        plan_actors(2, 1)
    with pytest.raises(InputError, match="--cpus-per-actor 1 or less"):
        plan_actors(None, 2)
    assert plan_actors(None, 1) == 1 and plan_actors(None, 0.5) == 2
    (tmp_path / "photos").mkdir()
    synthetic_images(1)[0].save(tmp_path / "photos" / "a.jpg")
    result = ray_embed(demo_bundle, tmp_path / "photos", "-o", tmp_path / "out", "--actors", "2")
    assert result.exit_code == 1 and "44687" in result.output and not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"], "nothing may be left behind"


def test_an_actor_says_which_node_lacks_the_bundle(tmp_path):
    with pytest.raises(BundleError, match=r"not readable on node .*every node of the cluster needs the bundle"):
        ClipEmbedder(str(tmp_path / "nowhere"), "visual", "bytes", "path", threads=1, batch_size=8)
