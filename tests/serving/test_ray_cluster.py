"""`run_ray_embed` on several nodes: a simulated cluster of real raylets (tests/serving/ray_cluster_scenarios.py).

The scenarios run in one child process, under a timeout, in a session of its
own that is killed whole if it overruns, so no hang and no raylet outlives the
test.  Each test below checks one scenario's outcome.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clip_onnx.runtime import ClipModel
from tests.hardening import ROOT

pytestmark = pytest.mark.ray_cluster

TIMEOUT_S = 600
STALL_S = 45  # generous: on a busy 2-core machine a fresh actor process took up to 60 s to start
# Enough images that the embedding (not the actors' start) lasts seconds: a node goes while most is ahead.
MANY = 2000
# The first SHARDED of them also as webdataset shards of SHARD_SIZE samples each.
SHARDED, SHARD_SIZE = 1000, 125


@pytest.fixture(scope="module")
def scenarios(demo_bundle, tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    many, work = base / "many", base / "work"
    for folder in (many, work):
        folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(MANY):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(many / f"{i:04d}.jpg", quality=80)
    (base / "shards").mkdir()
    jpegs = sorted(many.iterdir())[:SHARDED]
    for shard in range(SHARDED // SHARD_SIZE):
        with tarfile.open(base / "shards" / f"{shard:05d}.tar", "w") as tar:
            for path in jpegs[shard * SHARD_SIZE : (shard + 1) * SHARD_SIZE]:
                data = path.read_bytes()
                info = tarfile.TarInfo(path.name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    locked = base / "locked-bundle"
    shutil.copytree(demo_bundle, locked)
    for path in locked.iterdir():
        path.chmod(0)  # unreadable to a root without CAP_DAC_OVERRIDE, as the scenario's fourth node runs
    config = {"bundle": str(demo_bundle), "locked_bundle": str(locked), "many": str(many)}
    config.update(
        work=str(work), stall=STALL_S, shards=str(base / "shards" / f"{{00000..{SHARDED // SHARD_SIZE - 1:05d}}}.tar")
    )
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.serving.ray_cluster_scenarios", json.dumps(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the raylets it starts share its session, and go with it on a timeout
    )
    try:
        stdout, stderr = child.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = child.communicate()
        pytest.fail(f"the cluster scenarios hung: still running after {TIMEOUT_S} s\n{stdout}\n{stderr[-3000:]}")
    results = {r["scenario"]: r for r in map(json.loads, (line for line in stdout.splitlines() if line[:1] == "{"))}
    if "shutdown" not in results:
        pytest.fail(f"the cluster scenarios stopped early (exit {child.returncode}):\n{stdout}\n{stderr[-3000:]}")
    return results, {"many": many, "locked": locked, "shards": base / "shards"}


def outcome(results, name: str) -> dict:
    result = results[name]
    assert "crashed" not in result, result.get("traceback")
    return result


def read_rows(folder) -> dict:
    table = pq.read_table(folder)
    ids = table.column("id").to_pylist()
    pairs = zip(table.column("embedding").to_pylist(), table.column("error").to_pylist(), strict=True)
    rows = dict(zip(ids, pairs, strict=True))
    assert len(rows) == len(ids), "every row exactly once"
    return rows


def test_a_node_that_cannot_open_the_bundle_stops_the_job_naming_the_node(scenarios):
    results, folders = scenarios
    result = outcome(results, "unreadable_bundle")
    assert result["error"] == "BundleError", result
    assert f"(id {result['locked_node'][:12]}) cannot open bundle {str(folders['locked'])!r}" in result["message"]
    assert "every node of the cluster needs the bundle at the same path" in result["message"]
    assert result["out"] is None and result["left_in_work"] == [], "nothing half-published"
    assert result["job_seconds"] < 180, "bounded (a fresh node starts its first worker slowly on a busy machine)"


def test_actors_spread_over_nodes_survive_a_lost_node_with_every_row_once_and_clipmodels_vectors(
    scenarios, demo_bundle
):
    results, folders = scenarios
    result = outcome(results, "node_lost")
    assert result.get("error") is None, result
    assert len({a["node"] for a in result["pool_before_loss"]}) == 3, f"3 actors on 3 nodes: {result}"
    assert result["removed_at_row"] < MANY // 2, "the node went with most of the job ahead"
    assert (result["rows"], result["failed"]) == (MANY, 0)
    rows = read_rows(result["out"])
    paths = sorted(folders["many"].iterdir())
    assert sorted(rows) == [str(p) for p in paths], "every row exactly once"
    got = np.asarray([rows[str(p)][0] for p in paths], np.float32)
    np.testing.assert_allclose(got, ClipModel.load(demo_bundle).encode_image(paths), atol=1e-6, rtol=0)
    restarted = [a for a in result["pool_after"] if a["restarts"]]
    assert len(restarted) == 1 and restarted[0]["node"] != result["removed_node"], "its actor came back elsewhere"
    assert result["left_in_work"] == []


def test_shards_survive_a_lost_node_with_every_row_once_and_clipmodels_vectors(scenarios, demo_bundle):
    results, folders = scenarios
    result = outcome(results, "shards_node_lost")
    assert result.get("error") is None, result
    assert result["removed_at_row"] < SHARDED // 2, "the node went with most of the job ahead"
    assert (result["rows"], result["failed"]) == (SHARDED, 0)
    rows = read_rows(result["out"])
    jpegs = sorted(folders["many"].iterdir())[:SHARDED]
    ids = [f"{folders['shards'] / f'{i // SHARD_SIZE:05d}.tar'}:{p.stem}" for i, p in enumerate(jpegs)]
    assert sorted(rows) == sorted(ids), "every sample exactly once"
    got = np.asarray([rows[i][0] for i in ids], np.float32)
    np.testing.assert_allclose(got, ClipModel.load(demo_bundle).encode_image(jpegs), atol=1e-6, rtol=0)
    assert any(a["restarts"] for a in result["pool_after"]) and result["left_in_work"] == []


def test_losing_every_node_the_pool_fits_on_ends_in_a_job_error_within_the_stall_timeout(scenarios):
    results, _ = scenarios
    result = outcome(results, "every_fitting_node_lost")
    assert (
        result["error"] == "JobError"
        and f"no row was embedded and no actor started for {STALL_S} s" in result["message"]
    ), result
    assert result["removed_at_row"] < MANY // 2, "the nodes went with most of the job ahead"
    assert result["seconds_after_loss"] < STALL_S + 60, "bounded: the stall timeout plus the wind-down"
    assert not result["job_running"], "Ray Data's execution ended too, though no task was in flight on the pool"
    assert result["out"] is None and result["left_in_work"] == [], "nothing half-published"
