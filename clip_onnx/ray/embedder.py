"""What runs on the cluster: the actor pool's callable class, the safe file reader, and the plan of the pool.

Reads and writes reserve no CPU (``num_cpus=0``): they only move bytes, so an
actor pool that holds every CPU can never starve them (ray-project/ray issue
44687).  A pool comes to hold every CPU whenever Ray restarts a lost node's
actors on the CPUs that are left, whatever was planned at the start.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from clip_onnx.batch.inputs import Item
from clip_onnx.batch.pipeline import MAX_FILE_BYTES, tower_steps, vector_shape
from clip_onnx.batch.shards import ImageText
from clip_onnx.batch.writers import embedding_table, printable_id
from clip_onnx.errors import BundleError, ClipOnnxError, InputError
from clip_onnx.files import read_regular

log = logging.getLogger(__name__)

# Ray resources of the tasks that read files and write parquet: none, so that they always run.
IO_TASK_ARGS = {"num_cpus": 0}
# Files per block of the dataset: enough blocks that every actor has work and a lost one is a small
# part of the job; read 16 at a time, so a task holds about 2 MB of photo-sized JPEGs per step.
READ_BLOCK_FILES = 64
_READ_BATCH_FILES = 16
READ_ERROR = "read_error"


class ClipEmbedder:
    """The callable class each actor of the pool holds: one ClipModel, loaded in ``__init__``.

    Takes pyarrow batches with the items in ``column`` (encoded image bytes,
    image paths or texts; for ``tower="both"`` a pair of columns, images and
    captions) and their ids in ``id_column`` (None: the text itself), and
    returns ``id``, ``embedding`` (``image_embedding`` and ``text_embedding``
    for "both"; null where the item failed), ``error`` and the batch's
    ``meta_columns`` as they came.  A row whose ``error_column`` is set, where
    the batch has that column (``read_image_files`` gives ``read_error``),
    fails with that reason: the read task could not read its file.
    ``decode`` is ``ClipModel.encode_image``'s.  ``progress``, a ``RowCounter``
    actor, hears of every batch.
    """

    def __init__(
        self,
        bundle: str,
        tower: str,
        column: str | tuple[str, str],
        id_column: str | None,
        threads: int,
        batch_size: int,
        max_file_bytes: int | None = MAX_FILE_BYTES,
        error_column: str | None = None,
        progress=None,
        decode: str = "exact",
        meta_columns: tuple[str, ...] = (),
    ):
        from clip_onnx.runtime import ClipModel

        towers = ("visual", "textual") if tower == "both" else (tower,)
        try:
            self.model = ClipModel.load(Path(bundle), towers=towers, batch_size=batch_size, threads=threads)
        except (ClipOnnxError, OSError) as exc:
            raise BundleError(
                f"{node_name()} cannot open bundle {bundle!r} ({exc}); every node of the cluster needs the "
                "bundle at the same path (a shared file system, or a copy on each node)"
            ) from None
        self.tower, self.column, self.id_column, self.error_column = tower, column, id_column, error_column
        self.threads, self.meta_columns = threads, tuple(meta_columns)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="clip-onnx-decode") if threads > 1 else None
        self.prepare, self.encode = tower_steps(self.model, tower, max_file_bytes, decode)
        self.progress = progress
        if progress is not None:
            import ray

            progress.register.remote(ray.get_runtime_context().current_actor)

    def __call__(self, batch):
        import pyarrow as pa

        items = self._items(batch)
        # Decoding is split over the actor's CPUs, in order, as contiguous runs of rows.
        step = max(1, math.ceil(len(items) / self.threads))
        runs = [(start, items[start : start + step]) for start in range(0, len(items), step)]
        prepared = (
            list(self.pool.map(lambda run: self.prepare(*run), runs))
            if self.pool
            else [self.prepare(*run) for run in runs]
        )
        dim = self.model.embed_dim
        vectors = np.zeros((len(items), *vector_shape(self.tower, dim)), np.float32)
        errors: list[str | None] = [None] * len(items)
        for part in prepared:
            if part.ids:
                vectors[part.positions] = self.encode(part.payload)
            for e in part.errors:
                # A read failure already reads "NotRegularFileError: ..."; other failures get their class here.
                errors[e.position] = e.message if e.error == _ReadFailure.__name__ else f"{e.error}: {e.message}"
        if self.progress is not None:
            self.progress.add.remote(len(items))
        mask = pa.array([e is not None for e in errors])
        ids = [printable_id(i.id) for i in items]
        extra = {"error": pa.array(errors, pa.string()), **{c: batch.column(c) for c in self.meta_columns}}
        return embedding_table(pa, ids, vectors, dim, mask=mask, extra=extra)

    def _items(self, batch) -> list[Item]:
        if isinstance(self.column, str):
            values = batch.column(self.column).to_pylist()
        else:  # "both": an image column and a caption column
            images, texts = (batch.column(c).to_pylist() for c in self.column)
            values = [ImageText(i, t) for i, t in zip(images, texts, strict=True)]
        ids = [str(i) for i in (batch.column(self.id_column).to_pylist() if self.id_column else values)]
        has_errors = self.error_column is not None and self.error_column in batch.column_names
        failed = batch.column(self.error_column).to_pylist() if has_errors else [None] * len(ids)
        items = []
        for item_id, value, failure in zip(ids, values, failed, strict=True):
            if failure is not None:
                value = _ReadFailure(failure)
            elif printable_id(item_id) != item_id:
                value = InputError("the name is not valid UTF-8 (shown with \\x escapes) and cannot be an id")
            items.append(Item(item_id, value))
        return items


class _ReadFailure(Exception):
    """Why the read task could not read a file; recorded as it came ("NotRegularFileError: ...")."""


def read_files(batch, max_file_bytes: int | None):
    """A Ray Data map over a batch of ``path`` and ``name``: the files' bytes, or why each one could not be read.

    ``name`` is the path as the file system's bytes, ``path`` the same as UTF-8
    text for the id.  Every file is opened as a regular file only and read up to
    the cap, so a FIFO, a device or a huge file is one failed row, never a
    blocked or exhausted read task; a name that is not UTF-8 fails as in `embed`.
    """
    import pyarrow as pa

    paths = batch.column("path").to_pylist()
    data: list[bytes | None] = []
    errors: list[str | None] = []
    for path, name in zip(paths, batch.column("name").to_pylist(), strict=True):
        try:
            if os.fsencode(path) != name:
                raise InputError("the name is not valid UTF-8 (shown with \\x escapes) and cannot be an id")
            data.append(read_regular(os.fsdecode(name), max_file_bytes))
            errors.append(None)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in a listed path; InputError
            data.append(None)
            errors.append(f"{type(exc).__name__}: {exc}")
    columns = {"path": pa.array(paths, pa.string()), "bytes": pa.array(data, pa.binary())}
    return pa.table({**columns, READ_ERROR: pa.array(errors, pa.string())})


def read_image_files(paths: Iterable[str], max_file_bytes: int | None = MAX_FILE_BYTES):
    """A dataset of ``path``, ``bytes`` and ``read_error`` for ``paths``, read by zero-CPU tasks."""
    import ray.data

    rows = [{"path": printable_id(p), "name": os.fsencode(p)} for p in paths]
    blocks = max(1, math.ceil(len(rows) / READ_BLOCK_FILES))
    return ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        read_files,
        fn_kwargs={"max_file_bytes": max_file_bytes},
        batch_format="pyarrow",
        batch_size=_READ_BATCH_FILES,
        **IO_TASK_ARGS,
    )


class RowCounter:
    """A tiny actor on the driver's node: the rows the pool has embedded, and the pool's actors.

    The driver reads both to see that the job moves (an actor that comes up,
    restarted after a node loss included, is progress too: starting a pool on
    a busy cluster takes a while); on a stall it kills the registered actors,
    which ends the job at once where Ray Data has tasks in flight on them (else
    Ray Data's no-progress timeout ends it, ``job._bound_stalls``).
    """

    def __init__(self):
        self.rows = 0
        self.actors: list = []

    def add(self, rows: int) -> None:
        self.rows += rows

    def register(self, actor) -> None:
        self.actors.append(actor)

    def progress(self) -> tuple[int, int]:
        return self.rows, len(self.actors)

    def pool(self) -> list:
        return self.actors


def row_counter():
    """A RowCounter actor pinned to this node, which lives as long as the driver does."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, max_restarts=0)(RowCounter).options(scheduling_strategy=here).remote()


def node_name() -> str:
    """ "node 10.0.0.7 (id 3f2a...)" for the node this process runs on, for error messages."""
    try:
        import ray

        context = ray.get_runtime_context()
        return f"node {ray.util.get_node_ip_address()} (id {context.get_node_id()[:12]})"
    except Exception:  # noqa: BLE001 - only a detail of an error message
        return "a node (unknown address)"


def plan_actors(actors: int | None, cpus_per_actor: float) -> int:
    """The actor pool size for ``cpus_per_actor`` CPUs an actor, checked against the nodes alive now.

    ``actors=None`` takes as many as fit with one CPU of the cluster left for
    the driver and the reading and writing tasks (at least one actor).  An actor
    larger than every node, or a pool larger than the cluster, would wait for
    resources forever and is refused with what fits.
    """
    import ray

    if not (isinstance(cpus_per_actor, (int, float)) and not isinstance(cpus_per_actor, bool) and cpus_per_actor > 0):
        raise InputError(f"cpus_per_actor must be a number > 0, got {cpus_per_actor!r}")
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise InputError(f"actors must be an int >= 1, got {actors!r}")
    if not ray.is_initialized():
        ray.init()
    nodes = [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    cpus, largest = sum(nodes), max(nodes, default=0.0)
    if cpus_per_actor > largest:
        raise InputError(
            f"no node of the cluster has {cpus_per_actor:g} CPUs (the largest has {largest:g}): an actor must "
            f"fit on one node; use --cpus-per-actor {largest:g} or less, or add larger nodes"
        )
    fits = sum(int(n // cpus_per_actor) for n in nodes)
    if actors is None:
        return max(1, min(fits, int((cpus - 1) // cpus_per_actor)))
    if actors > fits:
        raise InputError(
            f"{actors} actors x {cpus_per_actor:g} CPUs do not fit on the cluster's nodes ({cpus:g} CPUs in "
            f"all); the pool would wait for them forever: use --actors {fits} or fewer"
        )
    return actors


def embed_images(
    ds,
    bundle,
    *,
    actors: int | None = None,
    cpus_per_actor: float = 1,
    batch_size: int = 32,
    column: str = "bytes",
    id_column: str | None = "path",
    max_file_bytes: int | None = MAX_FILE_BYTES,
    decode: str = "exact",
):
    """``ds`` with one row per image: ``id``, ``embedding`` (null for a bad image) and ``error``.

    ``column`` holds encoded images (``read_image_files(paths)`` gives
    ``bytes`` and ``path``, and its ``read_error`` is honoured) or image paths
    that every node can read (regular files of at most ``max_file_bytes``).
    ``decode`` is ``ClipModel.encode_image``'s ("exact", or "draft" for JPEGs at a reduced scale).
    """
    return _embed(
        ds, bundle, "visual", actors, cpus_per_actor, batch_size, column, id_column, max_file_bytes, decode=decode
    )


def embed_texts(
    ds,
    bundle,
    *,
    actors: int | None = None,
    cpus_per_actor: float = 1,
    batch_size: int = 256,
    column: str = "text",
    id_column: str | None = None,
):
    """``ds`` with one row per text: ``id`` (``id_column``, or the text itself), ``embedding`` and ``error``."""
    return _embed(ds, bundle, "textual", actors, cpus_per_actor, batch_size, column, id_column, None)


def _embed(ds, bundle, tower: str, actors, cpus_per_actor, batch_size: int, column, id_column, max_file_bytes, **more):
    import ray.data

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    size = plan_actors(actors, cpus_per_actor)
    kwargs = {
        "bundle": str(Path(bundle).absolute()),  # actors need not share the driver's working folder
        "tower": tower,
        "column": column,
        "id_column": id_column,
        "threads": max(1, int(cpus_per_actor)),
        "batch_size": batch_size,
        "max_file_bytes": max_file_bytes,
        "error_column": READ_ERROR,
        **more,
    }
    return ds.map_batches(
        ClipEmbedder,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=cpus_per_actor,
    )
