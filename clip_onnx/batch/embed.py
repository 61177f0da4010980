"""``embed_dataset``: embed every item a set of sources names, streamed, resumable, bad items recorded."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clip_onnx.batch.inputs import Item
from clip_onnx.batch.options import EmbedOptions
from clip_onnx.batch.parts import PartialRun
from clip_onnx.batch.pipeline import Batch, chunks, embed_batches
from clip_onnx.batch.sources import plan_sources
from clip_onnx.batch.writers import Outputs, check_id, plan_outputs, printable_id, write_outputs
from clip_onnx.bundle import read_bundle
from clip_onnx.errors import BundleError, InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedSummary:
    outputs: Outputs
    total: int  # items the sources name
    embedded: int  # rows in the output
    failed: int  # items recorded in the errors file
    resumed: int  # items a stopped run had already done
    dim: int
    seconds: float  # this run's wall time

    def line(self) -> str:
        rate = (self.total - self.resumed) / self.seconds if self.seconds > 0 else 0.0
        text = f"embedded {self.embedded} of {self.total} items"
        if self.failed:
            text += f", {self.failed} failed (see {self.outputs.errors})"
        if self.resumed:
            text += f", {self.resumed} of them by the stopped run"
        names = self.outputs.main if self.outputs.ids is None else f"{self.outputs.main} + {self.outputs.ids.name}"
        return f"{text}; wrote {names}: {self.embedded} x {self.dim} float32 ({rate:.1f} items/s)"


def embed_dataset(
    bundle,
    out,
    options: EmbedOptions | None = None,
    *,
    sources: Iterable[str] = (),
    images: Iterable[str] = (),
    texts: Iterable[str] = (),
    text_files: Iterable[str] = (),
    column: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    **keywords: Any,
) -> EmbedSummary:
    """Embed what ``sources`` name (see ``plan_sources``) with ``bundle`` and write ``out``.

    Vectors are L2-normalised float32, rows in source order; ``out`` is parquet
    (id, embedding) or, for ``fmt="npy"`` or a ``.npy`` name, ``OUT.npy`` with
    ``OUT.ids.txt``.  Items that cannot be read or decoded are skipped and listed
    in ``OUT.errors.jsonl``.  Work is committed every ``part_size`` items to
    ``OUT.partial/``; ``resume=True`` continues a stopped run from there and
    ends with the file an uninterrupted run writes, and damaged parts are
    embedded again.  ``options`` (an ``EmbedOptions``) says how the job runs; the
    keywords of clip-onnx 0.1 (``batch_size=``, ``resume=``, ...) still work in its
    place.  ``progress(done, total)`` is called after every batch.
    """
    started = time.perf_counter()
    if options is not None and keywords:
        raise TypeError(f"give EmbedOptions or the keywords {sorted(keywords)}, not both")
    options = options or EmbedOptions.from_keywords(**keywords)
    outputs = plan_outputs(out, options.fmt)
    planned = plan_sources(
        sources,
        images=images,
        texts=texts,
        text_files=text_files,
        column=column,
        tower=options.tower,
        max_file_bytes=options.max_file_bytes,
    )
    if planned.tower == "both" and outputs.format != "parquet":
        raise InputError("--tower both writes parquet (image_embedding and text_embedding columns); name OUT .parquet")
    total = planned.count()
    workers = options.workers or os.cpu_count() or 1
    # Each worker runs whole batches through the model: ONNX Runtime's own threads share out what is left.
    model = _open_model(bundle, planned.tower, options, max(1, (os.cpu_count() or 1) // workers))
    graph_sha = {name: model.bundle.manifest.sha256(name) for t in model.towers for name in model.bundle.graph_files(t)}
    state = {"tower": planned.tower, "graph_sha256": graph_sha, "batch_size": options.batch_size}
    state.update(part_size=options.part_size, decode=options.decode)
    run = PartialRun(outputs.main, state, resume=options.resume)
    with _kept_for_resume(run):
        items = _checked_ids(planned.items(), outputs)
        resumed = run.skip_done(items)
        if resumed:
            log.info("resuming %s: %d of %d items were done", outputs.main, resumed, total)
        report = (lambda n: progress(n, total)) if progress else (lambda n: None)
        batches = chunks(items, run.done, model.batch_size, options.part_size)
        _embed_parts(
            embed_batches(
                model, planned.tower, batches, workers=workers, max_bytes=options.max_file_bytes, decode=options.decode
            ),
            run,
            part_size=options.part_size,
            progress=report,
        )
        metadata = {"bundle": Path(bundle).name, "tower": planned.tower, "graph_sha256": graph_sha, "normalized": True}
        metadata["decode"] = options.decode
        embedded, failed = write_outputs(outputs, run.parts, model.embed_dim, metadata, planned.meta_columns)
    run.discard()
    # The items as read, which a source that changed since it was counted (or a damaged shard) may differ from.
    total = run.done
    return EmbedSummary(outputs, total, embedded, failed, resumed, model.embed_dim, time.perf_counter() - started)


@contextmanager
def _kept_for_resume(run: PartialRun) -> Iterator[None]:
    """On any failure or interrupt, keep the committed parts for --resume (and say so), or leave nothing."""
    try:
        yield
    except BaseException:
        if run.parts:
            run.close()
            log.warning("stopped; %d items are saved in %s: rerun with --resume to continue", run.done, run.dir)
        else:
            run.discard()
        raise


def _embed_parts(
    embedded: Iterator[tuple[Batch, np.ndarray]], run: PartialRun, *, part_size: int, progress: Callable[[int], None]
) -> None:
    """Commit the pipeline's batches from ``run.done`` on as parts, one at every multiple of ``part_size``."""
    progress(run.done)
    pending: list[tuple[Batch, np.ndarray]] = []
    for batch, vectors in embedded:
        pending.append((batch, vectors))
        end = batch.start + batch.size
        if end % part_size == 0:
            _commit(run, pending)
            pending = []
        progress(end)
    if pending:
        _commit(run, pending)


def _commit(run: PartialRun, pending: list[tuple[Batch, np.ndarray]]) -> None:
    first, last = pending[0][0], pending[-1][0]
    run.commit(
        first.start,
        last.start + last.size,
        [p for b, _ in pending for p in b.positions],
        [i for b, _ in pending for i in b.ids],
        np.concatenate([v for _, v in pending]),
        [e for b, _ in pending for e in b.errors],
        [m for b, _ in pending for m in b.meta],
    )


def _checked_ids(items: Iterator[Item], outputs: Outputs) -> Iterator[Item]:
    """``items``, each one whose id cannot be written carrying that error as its value (a failure of its own)."""
    for item in items:
        try:
            check_id(outputs, item.id)
        except InputError as exc:
            item = Item(printable_id(item.id), exc)
        yield item


def _open_model(bundle, tower: str, options: EmbedOptions, threads: int):
    from clip_onnx.runtime import ClipModel

    found = read_bundle(bundle, verify=False)
    if found.kind == "classifier":
        raise BundleError(
            f"{bundle} is a classifier bundle: it maps images to class logits, not to embeddings; "
            "classify with `clip-onnx predict`, or embed with a two-tower CLIP bundle"
        )
    towers = ("visual", "textual") if tower == "both" else (tower,)
    return ClipModel.load(
        bundle, batch_size=options.batch_size, towers=towers, threads=threads, backend=options.backend
    )
