"""Embed datasets on a Ray cluster: a Ray Data ``map_batches`` job over ``clip_onnx.runtime``.

Ray schedules, moves and writes the data; this module only gives it a
callable class, ``ClipEmbedder``, that opens the bundle once per actor and
embeds batch after batch.  Images travel through the object store as encoded
bytes and are decoded inside the actor.  A row that cannot be decoded gets a
null embedding and its reason in the ``error`` column; the job goes on.

Needs the ``[ray]`` extra (``ray[data]``).  The bundle path must be readable
on every node: a shared file system, or the same copy at the same path.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clip_onnx.batch.pipeline import prepare_images, prepare_texts
from clip_onnx.batch.sources import Item, walk_images
from clip_onnx.batch.writers import embedding_table
from clip_onnx.bundle import read_bundle
from clip_onnx.errors import BackendError, BundleError, InputError
from clip_onnx.files import owned_tempdir, rename_new

log = logging.getLogger(__name__)

__all__ = ["ClipEmbedder", "RayEmbedSummary", "embed_images", "embed_texts", "plan_actors", "run_ray_embed"]


class ClipEmbedder:
    """The callable class each actor of the pool holds: one ClipModel, loaded in ``__init__``.

    Takes pyarrow batches with the items in ``column`` (encoded image bytes,
    image paths or texts) and their ids in ``id_column`` (None: the text
    itself), and returns ``id``, ``embedding`` (null where the item failed)
    and ``error``.
    """

    def __init__(self, bundle: str, tower: str, column: str, id_column: str | None, threads: int, batch_size: int):
        # ONNX Runtime would otherwise start one thread per core of the node, whatever Ray reserved.
        os.environ["CLIP_ONNX_THREADS"] = str(threads)
        path = Path(bundle)
        if not os.access(path / "manifest.json", os.R_OK):
            raise BundleError(
                f"bundle {bundle!r} is not readable on node {_node_ip()}: every node of the cluster "
                "needs the bundle at the same path (a shared file system, or a copy on each node)"
            )
        from clip_onnx.runtime import ClipModel

        self.model = ClipModel.load(path, towers=(tower,), batch_size=batch_size)
        self.tower, self.column, self.id_column = tower, column, id_column
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="clip-onnx-decode") if threads > 1 else None
        self.prepare = prepare_images(self.model.preprocess) if tower == "visual" else prepare_texts

    def __call__(self, batch):
        import pyarrow as pa

        values = batch.column(self.column).to_pylist()
        ids = batch.column(self.id_column).to_pylist() if self.id_column else values
        items = [Item(str(i), v) for i, v in zip(ids, values, strict=True)]
        # Decoding is split over the actor's CPUs, in order, as contiguous runs of rows.
        step = max(1, math.ceil(len(items) / self.threads))
        runs = [(start, items[start : start + step]) for start in range(0, len(items), step)]
        prepared = (
            list(self.pool.map(lambda run: self.prepare(*run), runs))
            if self.pool
            else [self.prepare(*run) for run in runs]
        )
        dim = self.model.embed_dim
        vectors = np.zeros((len(items), dim), np.float32)
        errors: list[str | None] = [None] * len(items)
        for part in prepared:
            if part.ids:
                encode = self.model.encode_pixels if self.tower == "visual" else self.model.encode_text
                vectors[part.positions] = encode(part.payload)
            for e in part.errors:
                errors[e.position] = f"{e.error}: {e.message}"
        mask = pa.array([e is not None for e in errors])
        return embedding_table(
            pa, [i.id for i in items], vectors, dim, mask=mask, extra={"error": pa.array(errors, pa.string())}
        )


def _node_ip() -> str:
    try:
        import ray.util

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only a detail of an error message
        return "(unknown address)"


def plan_actors(actors: int | None, cpus_per_actor: float) -> int:
    """The actor pool size for ``cpus_per_actor``, leaving at least one cluster CPU to Ray Data's read tasks.

    With every CPU reserved by the pool, the read tasks never get one and the
    job waits forever (ray-project/ray issue 44687).  ``actors=None`` takes
    as many actors as fit with one CPU free; a number that leaves none free is
    refused with a message that says what fits.
    """
    import ray

    if not (isinstance(cpus_per_actor, (int, float)) and cpus_per_actor > 0):
        raise InputError(f"cpus_per_actor must be a number > 0, got {cpus_per_actor!r}")
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise InputError(f"actors must be an int >= 1, got {actors!r}")
    if not ray.is_initialized():
        ray.init()
    cpus = float(ray.cluster_resources().get("CPU", 0))
    fits = int((cpus - 1) // cpus_per_actor)
    if fits < 1:
        raise InputError(
            f"the cluster has {cpus:g} CPUs: an actor of {cpus_per_actor:g} CPUs would leave none free "
            "for Ray Data's read tasks and the job would hang (ray issue 44687); use "
            f"--cpus-per-actor {max(cpus - 1, 0):g} or less, or add nodes"
        )
    if actors is None:
        return fits
    if actors * cpus_per_actor > cpus - 1:
        raise InputError(
            f"{actors} actors x {cpus_per_actor:g} CPUs reserve {actors * cpus_per_actor:g} of the "
            f"cluster's {cpus:g} CPUs; leave at least 1 free for Ray Data's read tasks or the job hangs "
            f"(ray issue 44687): use --actors {fits} or fewer"
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
):
    """``ds`` with one row per image: ``id``, ``embedding`` (null for a bad image) and ``error``.

    ``column`` holds encoded images (``ray.data.read_binary_files(...,
    include_paths=True)`` gives ``bytes`` and ``path``) or image paths that
    every node can read.
    """
    return _embed(ds, bundle, "visual", actors, cpus_per_actor, batch_size, column, id_column)


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
    return _embed(ds, bundle, "textual", actors, cpus_per_actor, batch_size, column, id_column)


def _embed(ds, bundle, tower: str, actors, cpus_per_actor, batch_size: int, column: str, id_column):
    import ray.data

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    size = plan_actors(actors, cpus_per_actor)
    # Actors need not share the driver's working folder.
    kwargs = {
        "bundle": str(Path(bundle).absolute()),
        "tower": tower,
        "column": column,
        "id_column": id_column,
        "threads": max(1, int(cpus_per_actor)),
        "batch_size": batch_size,
    }
    return ds.map_batches(
        ClipEmbedder,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=cpus_per_actor,
    )


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
) -> RayEmbedSummary:
    """`clip-onnx ray-embed`: embed a folder of images or a parquet column on Ray and write parquet to ``out_dir``.

    ``source`` is a folder of images (read as encoded bytes; ids are the paths)
    unless it is a .parquet file or ``column`` is given: then parquet with
    ``column`` (default ``bytes`` or ``text``, whichever it has), ids from an
    ``id`` column if there is one, else the text.  Without ``address`` and
    with Ray not yet running, a local Ray is started (``num_cpus``: all) and
    stopped at the end.  ``out_dir`` appears only when the job has finished.
    """
    started = time.perf_counter()
    out_dir = _check_out_dir(out_dir)
    found = read_bundle(bundle, verify=False)  # the driver's node needs it too, and a wrong path fails here, fast
    if found.kind != "clip":
        raise BundleError(f"{bundle} is a {found.kind} bundle, not a two-tower CLIP bundle; it has no embeddings")
    with _ray_session(address, num_cpus):
        ds, tower, col, id_col = _read(str(source), column)
        size = plan_actors(actors, cpus_per_actor)
        embed = embed_images if tower == "visual" else embed_texts
        batch_size = batch_size or (32 if tower == "visual" else 256)
        embedded = embed(
            ds, bundle, actors=size, cpus_per_actor=cpus_per_actor, column=col, id_column=id_col, batch_size=batch_size
        )
        staging = owned_tempdir(out_dir.parent, out_dir.name)
        try:
            _write(embedded, staging)
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


@contextmanager
def _ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """The Ray this process already runs, else one started here (local, or joining ``address``) and stopped after."""
    import ray
    import ray.data

    # Ray Data's progress bars, like embed's, only where a person watches.
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    if ray.is_initialized():
        yield
        return
    ray.init(
        address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False, log_to_driver=False
    )
    try:
        yield
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


def _read(source: str, column: str | None):
    """(dataset, tower, column, id column) for ``source``."""
    import ray.data

    if column is None and not source.endswith(".parquet"):
        if not os.path.isdir(source):
            raise InputError(f"SOURCE {source!r} is neither a folder of images nor a .parquet file")
        paths = [os.path.abspath(p) for p in walk_images(source)]
        if not paths:
            raise InputError(f"folder {source!r} holds no image files")
        return ray.data.read_binary_files(paths, include_paths=True), "visual", "bytes", "path"
    if not os.path.exists(source):
        raise InputError(f"parquet SOURCE {source!r} does not exist")
    ds = ray.data.read_parquet(os.path.abspath(source))
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
    return ds.select_columns([c for c in (id_column, column) if c]), tower, column, id_column


def _write(ds, staging: Path) -> None:
    import ray.exceptions

    try:
        ds.write_parquet(str(staging))
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
