"""The scenarios of tests/serving/test_ray_cluster.py, run in a process of their own on a simulated multi-node cluster.

``ray.cluster_utils.Cluster`` starts real raylets on this machine: a head with
1 CPU and two workers with 2 CPUs each.  One more node joins through ``ray
start --block`` in a process whose root has lost CAP_DAC_OVERRIDE, so that it
cannot read a bundle the other nodes read.  Nodes are removed mid-job with
``Cluster.remove_node``.  Each scenario prints one JSON line; the test process
reads them, under a timeout of its own.

Usage: python -m tests.serving.ray_cluster_scenarios CONFIG_JSON, with the keys bundle, locked_bundle, many,
shards (a brace range of webdataset shards), work and stall (see the fixture in tests/serving/test_ray_cluster.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from tests.hardening import _drop_file_capabilities

NODE_MEMORY = 128 * 1024**2  # object store per node: three of them share this machine


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    config = json.loads(sys.argv[1])
    started = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": NODE_MEMORY, "include_dashboard": False},
    )
    workers = [cluster.add_node(num_cpus=2, object_store_memory=NODE_MEMORY) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    report("cluster", seconds=time.perf_counter() - started)
    try:
        for scenario in (node_lost, shards_node_lost, unreadable_bundle, every_fitting_node_lost):
            t0 = time.perf_counter()
            try:
                result = scenario(cluster, workers, config)
            except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails on it
                result = {"crashed": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            report(scenario.__name__, seconds=time.perf_counter() - t0, **result)
    finally:
        t0 = time.perf_counter()
        ray.shutdown()
        cluster.shutdown()
        report("shutdown", seconds=time.perf_counter() - t0)


def report(name: str, **fields) -> None:
    print(json.dumps({"scenario": name, **fields}), flush=True)


def embed(config, out, **kwargs) -> dict:
    """run_ray_embed into ``work/out``: its summary, or the error it raised, and what it left in ``work``."""
    from clip_onnx.ray import run_ray_embed

    work = Path(config["work"])
    target = work / out
    t0 = time.perf_counter()
    try:
        summary = run_ray_embed(kwargs.pop("bundle", config["bundle"]), kwargs.pop("source"), target, **kwargs)
        outcome = {"rows": summary.rows, "failed": summary.failed, "actors": summary.actors}
    except Exception as exc:  # noqa: BLE001 - the test checks which
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    outcome["job_seconds"] = time.perf_counter() - t0
    outcome["out"] = str(target) if target.exists() else None
    outcome["left_in_work"] = sorted(p.name for p in work.iterdir() if p.name.startswith("."))
    return outcome


def pool_actors(job_start: float) -> list[dict]:
    """Node and restarts of every ClipEmbedder actor created since ``job_start`` (the GCS keeps dead ones too)."""
    from ray._private import state

    return [
        {"node": actor["Address"]["NodeID"], "restarts": actor.get("NumRestarts", 0), "state": actor.get("State")}
        for actor in state.actors().values()
        if "ClipEmbedder" in actor.get("ActorClassName", "") and actor.get("StartTime", 0) / 1000 >= job_start - 1
    ]


def node_lost(cluster, workers, config) -> dict:
    """Three actors spread over the three nodes; a worker node (and its actor) goes early in the job."""
    return lose_a_node(cluster, workers, config, "lost", config["many"])


def shards_node_lost(cluster, workers, config) -> dict:
    """The same over webdataset shards: a lost node's read tasks read their shards again from the start."""
    return lose_a_node(cluster, workers, config, "lost-shards", config["shards"])


def lose_a_node(cluster, workers, config, out: str, source: str) -> dict:
    removed: dict = {}

    def progress(rows: int, total: int) -> None:
        if rows >= 48 and not removed:  # three batches of 16 done: nearly all of the job is still ahead
            removed.update(at_row=rows, at=time.perf_counter(), pool=pool_actors(job_start))
            removed["node"] = workers[1].node_id
            cluster.remove_node(workers[1])

    job_start = time.time()
    outcome = embed(
        config, out, source=source, actors=3, cpus_per_actor=1, batch_size=16, stall_timeout=120, progress=progress
    )
    finished = time.perf_counter()
    workers[1] = cluster.add_node(num_cpus=2, object_store_memory=NODE_MEMORY)  # for the next scenarios
    cluster.wait_for_nodes()
    return {
        **outcome,
        "removed_at_row": removed.get("at_row"),
        "removed_node": removed.get("node"),
        "seconds_after_loss": finished - removed["at"] if removed else None,
        "pool_before_loss": removed.get("pool"),
        "pool_after": pool_actors(job_start),
    }


def unreadable_bundle(cluster, workers, config) -> dict:
    """A fourth node that cannot read ``locked_bundle`` (its files are mode 000; the node's root obeys modes)."""
    import ray

    before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    command = [ray_cli, "start", "--address", cluster.address, "--num-cpus", "2", "--block", "--disable-usage-stats"]
    command += ["--object-store-memory", str(NODE_MEMORY)]
    node = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_drop_file_capabilities if os.geteuid() == 0 else None,
        start_new_session=True,
    )
    holds = []
    try:
        new = wait_for(lambda: {n["NodeID"] for n in ray.nodes() if n["Alive"]} - before, 60)
        # The two workers' CPUs are taken, so the one 2-CPU actor of the pool can only go to the new node.
        holds = [hold_cpus(worker.node_id, 2) for worker in workers]
        ray.get([h.ready.remote() for h in holds], timeout=120)
        outcome = embed(
            config, "locked", bundle=config["locked_bundle"], source=config["many"], actors=1, cpus_per_actor=2
        )
        return {**outcome, "locked_node": sorted(new)[0]}
    finally:
        for hold in holds:
            ray.kill(hold)
        node.send_signal(signal.SIGTERM)  # `ray start --block` stops the node's processes, then exits
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        wait_for(lambda: {n["NodeID"] for n in ray.nodes() if n["Alive"]} == before, 60)


class _Hold:
    def ready(self) -> bool:
        return True


def hold_cpus(node_id: str, cpus: int):
    """An idle actor that reserves ``cpus`` CPUs of node ``node_id``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    there = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    return ray.remote(num_cpus=cpus)(_Hold).options(scheduling_strategy=there).remote()


# every_fitting_node_lost's reads of the files from this one on wait until every node the pool fits on is gone.
HELD_FROM = 128


def every_fitting_node_lost(cluster, workers, config) -> dict:
    """Two-CPU actors fit only on the two workers; both go, so no actor can be restarted anywhere.

    They go while the pool idles: the reads past the first HELD_FROM files
    wait (a share that stopped answering) until the workers are gone, so no
    task is in flight on the pool's actors, and killing them cannot end Ray
    Data's job by failing one (benchmarks/NOTES.md).  Then the reads go on and
    fill the queue of a pool that cannot come back.
    """
    from clip_onnx.ray import embedder

    release = Path(config["work"]).parent / "release-reads"
    release.unlink(missing_ok=True)
    read_files = embedder.read_files

    def held_reads(batch, max_file_bytes):  # runs in Ray's read tasks
        if int(Path(batch.column("path")[0].as_py()).stem) >= HELD_FROM:
            while not release.exists():
                time.sleep(0.2)
        return read_files(batch, max_file_bytes)

    last, removed = {"row": time.perf_counter()}, {}

    def remove_when_idle() -> None:
        while time.perf_counter() - last["row"] < 5:  # no batch for 5 s: the pool embedded all it could read
            time.sleep(0.2)
        removed["at"] = time.perf_counter()
        for worker in workers:
            cluster.remove_node(worker)
        release.touch()

    def progress(rows: int, total: int) -> None:
        last["row"] = time.perf_counter()
        if rows >= 32 and not removed:
            removed["rows"] = rows
            threading.Thread(target=remove_when_idle, daemon=True).start()

    embedder.read_files = held_reads
    try:
        outcome = embed(
            config, "stalled", source=config["many"], cpus_per_actor=2, batch_size=16,
            stall_timeout=config["stall"], progress=progress,
        )  # fmt: skip
    finally:
        embedder.read_files = read_files
        release.touch()  # no read task may wait for ever
    after = time.perf_counter() - removed["at"] if "at" in removed else None
    # The job's thread (clip_onnx.ray.job._Watch) ends only when Ray Data's execution has ended.
    running = any(t.name == "clip-onnx-ray-job" and t.is_alive() for t in threading.enumerate())
    return {**outcome, "seconds_after_loss": after, "removed_at_row": removed.get("rows"), "job_running": running}


def wait_for(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"condition not met in {seconds} s")


if __name__ == "__main__":
    main()
