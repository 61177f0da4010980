"""`clip-onnx ray-embed`: one Ray Data job from a folder or parquet to a folder of parquet, never half-published.

The job is written into a hidden staging folder beside OUT_DIR and renamed to
OUT_DIR only when Ray Data has finished.  While it runs, the driver watches a
counter that every actor reports to: when for ``stall_timeout`` seconds no row
is embedded and no actor comes up (a cluster that lost every node the pool fits
on, an actor that cannot be placed), the pool's actors are killed, the job ends
with a JobError and the staging folder is removed.  Ray Data's own no-progress
timeout, set to the same value, is what ends an execution that has no task in
flight on the killed actors (see ``_bound_stalls``).  Ray's own retries handle
what they can first: a lost node's actors are restarted elsewhere and its tasks
rerun, and every row is still written exactly once (tests/serving/test_ray_cluster.py).
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from clip_onnx.batch.inputs import open_input
from clip_onnx.batch.pipeline import MAX_FILE_BYTES
from clip_onnx.batch.shards import META_COLUMNS, is_shard_source
from clip_onnx.batch.sources import TOWER_NAMES, walk_images
from clip_onnx.bundle import read_bundle
from clip_onnx.errors import BackendError, BundleError, InputError, JobError
from clip_onnx.files import owned_tempdir, rename_new
from clip_onnx.ray.embedder import IO_TASK_ARGS, _embed, plan_actors, read_image_files, row_counter
from clip_onnx.ray.shards import SHARD_COLUMNS, read_shards

log = logging.getLogger(__name__)

# No row embedded anywhere in the cluster for this long ends the job (0: wait forever).
STALL_TIMEOUT_S = 600.0
# After the pool is killed, how long the job may take to wind down before Ray itself is shut down (if ours).
_WIND_DOWN_S = 60.0


class RayEmbedSummary(NamedTuple):
    out_dir: Path
    rows: int
    failed: int
    dim: int
    actors: int
    seconds: float

    def line(self) -> str:
        failed = f", {self.failed} failed (null embedding, reason in the error column)" if self.failed else ""
        return (
            f"embedded {self.rows - self.failed} of {self.rows} rows{failed} with {self.actors} actor(s); "
            f"wrote {self.out_dir}/ in {self.seconds:.1f}s"
        )


def run_ray_embed(
    bundle,
    source,
    out_dir,
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1,
    column: str | None = None,
    batch_size: int | None = None,
    num_cpus: int | None = None,
    max_file_bytes: int | None = MAX_FILE_BYTES,
    stall_timeout: float | None = STALL_TIMEOUT_S,
    progress: Callable[[int, int], None] | None = None,
    tower: str | None = None,
    decode: str = "exact",
) -> RayEmbedSummary:
    """`clip-onnx ray-embed`: embed a folder of images, webdataset shards or a parquet column on Ray.

    ``source`` is a folder of images (read as encoded bytes, regular files of at
    most ``max_file_bytes`` only; ids are the paths); webdataset shards (a .tar
    path, glob or brace range, read as `embed` reads them: ids ``SHARD:KEY``,
    ``url`` and ``caption`` columns, ``tower`` "image" (default), "text" or
    "both"); or, for a .parquet file or with ``column``, parquet with ``column`` (default
    ``bytes`` or ``text``, whichever it has), ids from an ``id`` column if
    there is one, else the text.  ``decode`` is ``ClipModel.encode_image``'s.
    Output goes to the folder ``out_dir`` as parquet.  Without ``address`` and with Ray not yet
    running, a local Ray is started (``num_cpus``: all) and stopped at the end.
    ``out_dir`` appears only when the job has finished.  A job in which no row
    is embedded and no actor starts for ``stall_timeout`` seconds (None or 0:
    no limit) is stopped with a JobError, and nothing is written.
    ``progress(rows, total)`` is called as rows are embedded (a row Ray
    retried counts again).
    """
    started = time.perf_counter()
    out_dir = _check_out_dir(out_dir)
    if stall_timeout is not None and not (isinstance(stall_timeout, (int, float)) and stall_timeout >= 0):
        raise InputError(f"stall_timeout must be a number of seconds >= 0 (0: no limit), got {stall_timeout!r}")
    found = read_bundle(bundle, verify=False)  # the driver's node needs it too, and a wrong path fails here, fast
    if found.kind != "clip":
        raise BundleError(f"{bundle} is a {found.kind} bundle, not a two-tower CLIP bundle; it has no embeddings")
    with _ray_session(address, num_cpus) as owned:
        ds, tower, col, id_col, total = _read(str(source), column, max_file_bytes, tower)
        size = plan_actors(actors, cpus_per_actor)
        counter = row_counter()
        embedded = _embed(
            ds,
            bundle,
            tower,
            size,
            cpus_per_actor,
            batch_size or (256 if tower == "textual" else 32),
            col,
            id_col,
            None if tower == "textual" else max_file_bytes,
            progress=counter,
            decode=decode,
            meta_columns=META_COLUMNS if is_shard_source(str(source)) else (),
        )
        _bound_stalls(embedded, stall_timeout)
        staging = owned_tempdir(out_dir.parent, out_dir.name)
        try:
            watch = _Watch(counter, total, stall_timeout or None, progress, owned)
            watch.run(lambda: _write(embedded, staging))
            rows, failed = _count(staging)
            try:
                rename_new(staging, out_dir)
            except FileExistsError:
                raise InputError(
                    f"output folder {str(out_dir)!r} appeared while the job ran and was left as it is; "
                    "choose a new one (ray-embed never mixes runs)"
                ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    dim = found.manifest.embed_dim
    return RayEmbedSummary(out_dir, rows, failed, dim, size, time.perf_counter() - started)


def _bound_stalls(ds, stall_timeout: float | None) -> None:
    """Make Ray Data itself give up on a pool that cannot start and on an execution that stopped moving.

    The watch can only kill actors that came up, or shut down a Ray of its
    own.  Ray Data waits forever for a pool to start by default; in a session
    the caller owns, ``wait_for_min_actors_s`` is what ends a pool that never
    gets placed.  And Ray Data (2.60) learns of killed actors only through a
    task that was in flight on them: a pool that sat idle, waiting for reads,
    when its nodes went stays "restarting" in its books, so killing it ends
    nothing.  Its no-progress timeout (no block moved for that long; 30 min by
    default) ends such an execution; "no limit" turns it off.
    """
    context = getattr(ds, "context", None)  # the dataset's own copy (Ray >= 2.9)
    if context is None:
        return
    if stall_timeout:
        context.wait_for_min_actors_s = stall_timeout
    if hasattr(context, "execution_no_progress_timeout_s"):  # Ray Data 2.60 has it, 2.40 not
        context.execution_no_progress_timeout_s = stall_timeout or -1


class _Watch:
    """Runs the job on a thread and stops it when neither rows nor actors come for ``stall_timeout`` seconds."""

    def __init__(self, counter, total: int, stall_timeout: float | None, progress, owned: bool):
        self.counter, self.total, self.stall_timeout = counter, total, stall_timeout
        self.progress, self.owned = progress, owned
        self.seen = (-1, 0)  # (rows, actors) the counter last reported

    def run(self, job: Callable[[], None]) -> None:
        outcome: dict = {}
        thread = threading.Thread(target=_capture, args=(job, outcome), name="clip-onnx-ray-job", daemon=True)
        thread.start()
        try:
            self._watch(thread)
        except BaseException:  # a stall, Ctrl-C, or a progress callback that raised: the job must not go on
            self._stop(thread)
            raise
        if "error" in outcome:  # Ray Data's no-progress timeout may see the stall first: the same JobError
            raise self._stalled() if isinstance(outcome["error"], _NoProgress) else outcome["error"]
        if self.progress is not None:
            self.progress(self.total, self.total)

    def _watch(self, thread: threading.Thread) -> None:
        import ray

        moved = time.monotonic()
        while thread.is_alive():
            thread.join(0.5)
            try:
                now = tuple(ray.get(self.counter.progress.remote(), timeout=10))
            except Exception:  # noqa: BLE001 - an unanswered poll is no progress, nothing more
                now = self.seen
            if now != self.seen:
                if self.progress is not None and now[0] != self.seen[0]:
                    self.progress(min(now[0], self.total), self.total)
                self.seen, moved = now, time.monotonic()
            elif self.stall_timeout and time.monotonic() - moved > self.stall_timeout and thread.is_alive():
                raise self._stalled()

    def _stalled(self) -> JobError:
        return JobError(
            f"no row was embedded and no actor started for {self.stall_timeout:g} s ({max(self.seen[0], 0)} of "
            f"{self.total} rows done): the cluster may have lost every node the actor pool fits on, or an "
            "actor cannot be placed (`ray status` shows pending actors). Nothing was written; rerun when "
            "the cluster has room, or raise --stall-timeout"
        )

    def _stop(self, thread: threading.Thread) -> None:
        """Kill the pool's actors and wait for Ray Data to end the job; shut down a Ray of our own if it does not.

        Ray Data ends at once where it has tasks in flight on the killed actors,
        else when its no-progress timeout (``_bound_stalls``) runs out.
        """
        import ray

        try:
            pool = ray.get(self.counter.pool.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - nothing registered, or the counter is gone with its node
            pool = []
        for actor in pool:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        started = time.monotonic()
        thread.join(_WIND_DOWN_S)
        if not thread.is_alive():
            log.info(
                "killed %d actor(s) of the stalled job; it ended %.1f s later", len(pool), time.monotonic() - started
            )
        elif self.owned:
            ray.shutdown()
            thread.join(_WIND_DOWN_S / 2)
        if thread.is_alive():
            log.warning("the stopped Ray job did not end; its tasks may still run on the cluster")


def _capture(job: Callable[[], None], outcome: dict) -> None:
    try:
        job()
    except BaseException as exc:  # handed to the watching thread
        outcome["error"] = exc


@contextmanager
def _ray_session(address: str | None, num_cpus: int | None) -> Iterator[bool]:
    """The Ray this process already runs (yields False), else one started here and stopped after (yields True)."""
    import ray
    import ray.data

    # Ray Data's progress bars, like embed's, only where a person watches.
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    if ray.is_initialized():
        yield False
        return
    ray.init(
        address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False, log_to_driver=False
    )
    try:
        yield True
    finally:
        ray.shutdown()


def _check_out_dir(out_dir) -> Path:
    text = str(out_dir)
    if "://" in text:
        raise InputError(
            f"output {text!r}: write to a folder on a shared file system; object-store URIs are not "
            "supported by ray-embed yet (call embed_images and write_parquet yourself)"
        )
    out = Path(out_dir).absolute()
    if out.exists():
        raise InputError(f"output folder {text!r} already exists; choose a new one (ray-embed never mixes runs)")
    if not out.parent.is_dir():
        raise InputError(f"the parent of output folder {text!r} does not exist; create {str(out.parent)!r} first")
    return out


def _read(source: str, column: str | None, max_file_bytes: int | None = MAX_FILE_BYTES, tower: str | None = None):
    """(dataset, tower, column, id column, rows) for ``source``; ``tower`` ("image", "text", "both") is for shards."""
    import ray.data

    if is_shard_source(source):
        if column is not None:
            raise InputError(f"SOURCE {source!r} names webdataset shards; --column is for parquet, leave it out")
        if tower not in (None, *TOWER_NAMES):
            raise InputError(f"tower must be one of {sorted(TOWER_NAMES)}, got {tower!r}")
        name = TOWER_NAMES[tower or "image"]
        ds, total = read_shards(source, name, max_file_bytes)
        return ds, name, SHARD_COLUMNS[name], "id", total
    if tower is not None:
        raise InputError(f"--tower is for webdataset shards; SOURCE {source!r} says which tower it needs")
    if column is None and not source.endswith(".parquet"):
        if not os.path.isdir(source):
            raise InputError(
                f"SOURCE {source!r} is neither a folder of images, webdataset shards (.tar) nor a .parquet file"
            )
        paths = [os.path.abspath(p) for p in walk_images(source)]
        if not paths:
            raise InputError(f"folder {source!r} holds no image files")
        return read_image_files(paths, max_file_bytes), "visual", "bytes", "path", len(paths)
    _check_table(source)
    # Ray 2.60 names the task resources and deprecates ray_remote_args; 2.40 has only ray_remote_args.
    named = "num_cpus" in inspect.signature(ray.data.read_parquet).parameters
    ds = ray.data.read_parquet(
        os.path.abspath(source), **(IO_TASK_ARGS if named else {"ray_remote_args": IO_TASK_ARGS})
    )
    schema = ds.schema()
    names = list(schema.names)
    column = column or next((c for c in ("bytes", "text") if c in names), None)
    if column not in names:
        raise InputError(
            f"parquet {source!r} has no column {column or 'bytes or text'!r}; its columns are {names}; "
            "name one with --column"
        )
    kind = str(dict(zip(names, schema.types, strict=True))[column])
    if "binary" not in kind and "string" not in kind:
        raise InputError(f"column {column!r} of {source!r} is {kind}; expected binary (encoded images) or strings")
    tower = "visual" if "binary" in kind else "textual"
    id_column = "id" if "id" in names else None
    if id_column is None and tower == "visual":
        raise InputError(f"parquet {source!r} has images in {column!r} but no 'id' column to name them; add one")
    return ds.select_columns([c for c in (id_column, column) if c]), tower, column, id_column, ds.count()


def _check_table(source: str) -> None:
    """A parquet SOURCE must be a folder or a regular file: Ray's reader would block on a FIFO forever."""
    if os.path.isdir(source):
        return
    with open_input(source, "parquet SOURCE"):
        pass


class _NoProgress(Exception):
    """Ray Data's no-progress timeout ended the job (``_bound_stalls``); the watch words the JobError."""


def _write(ds, staging: Path) -> None:
    import ray.data.exceptions
    import ray.exceptions

    no_progress = getattr(ray.data.exceptions, "ExecutionTimeoutError", ())  # Ray Data 2.60 has it, 2.40 not
    try:
        ds.write_parquet(str(staging), ray_remote_args=IO_TASK_ARGS)
    except no_progress:
        raise _NoProgress() from None
    except ray.exceptions.GetTimeoutError as exc:  # _bound_stalls's bound on the pool's start
        raise JobError(
            f"the actor pool did not start: {exc} Nothing was written; free or add resources, or lower "
            "--actors / --cpus-per-actor"
        ) from None
    except ray.exceptions.RayError as exc:
        raise _our_error(exc) from None


def _our_error(exc: Exception) -> Exception:
    """The clip-onnx error an actor raised, out of the Ray error that wraps its traceback; else ``exc``."""
    text = str(exc)
    for cls in (BundleError, InputError, BackendError):
        marker = f"{cls.__name__}: "
        lines = [line for line in text.splitlines() if marker in line and "Traceback" not in line]
        if lines:
            return cls(f"a Ray actor failed: {lines[-1].split(marker, 1)[1].strip()}")
    return exc


def _count(out_dir: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    errors = pq.read_table(out_dir, columns=["error"]).column("error")
    return len(errors), len(errors) - errors.null_count
