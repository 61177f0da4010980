"""Decode, preprocess and embed on a thread pool: the streaming core of `clip-onnx embed`.

Each worker thread takes a whole batch through decode, preprocess and the
model, with ONNX Runtime held to few intra-op threads, so while one worker
decodes another runs the model: decoding overlaps inference batch by batch.
Pillow releases the GIL while it decodes and resizes, and ONNX Runtime while
it runs, so threads keep every core busy.  This beat a decode pool feeding
one model thread with all cores (benchmarks/NOTES.md): small intra-op
threads waste less CPU on synchronisation.

A bounded window of batches in flight caps memory whatever the dataset size,
and batches never cross a part boundary, so a resumed run feeds the model
exactly the batches an uninterrupted one would (and gets bit-identical vectors).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from clip_onnx.batch.inputs import Item
from clip_onnx.batch.shards import ImageText
from clip_onnx.errors import InputError
from clip_onnx.files import read_regular

log = logging.getLogger(__name__)

# The largest image file a dataset job reads (--max-file-size): an uncompressed 8-bit RGBA picture at
# Pillow's decompression-bomb limit fits; a video or disk image named photo.jpg does not fill memory.
MAX_FILE_BYTES = 512 << 20


class ItemError(NamedTuple):
    position: int
    id: str
    error: str  # the exception's class name: InputError, FileNotFoundError, PermissionError, ...
    message: str

    def record(self) -> dict:
        return {"id": self.id, "error": self.error, "message": self.message}


class Batch(NamedTuple):
    """One batch ready for the model: the items that prepared well, and the errors of the others."""

    start: int  # source position of the batch's first item
    size: int  # items in the batch, good and bad
    positions: list[int]
    ids: list[str]
    payload: object  # float32 [len(ids), 3, S, S] pixels, a list of len(ids) texts, or both as a pair
    errors: list[ItemError]
    meta: list  # the good items' Item.meta


def image_pixels(
    preprocess: Callable, value: object, max_bytes: int | None = MAX_FILE_BYTES, decode: str = "exact"
) -> np.ndarray:
    """float32 [3, S, S] for one image given as a path or as encoded bytes, decoded as ``decode`` says.

    The file is read here, not by Pillow, so that an unreadable file reports
    its own OSError (FileNotFoundError, PermissionError, IsADirectoryError,
    NotRegularFileError for a FIFO, socket or device, FileTooLargeError past
    ``max_bytes``) instead of a decode failure, and never blocks or fills memory;
    decoding bytes and decoding the file give the same pixels.
    """
    if isinstance(value, str):
        value = read_regular(value, max_bytes)
    elif not isinstance(value, (bytes, bytearray, memoryview)):
        raise InputError(f"expected an image path or encoded bytes, got {type(value).__name__}")
    return preprocess.one(value, decode=decode)


def check_text(value: object) -> str:
    if not isinstance(value, str):
        raise InputError("empty cell" if value is None else f"expected a text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes a source decoded with surrogateescape: not text
        raw = value[exc.start : exc.end].encode("utf-8", "surrogateescape")
        raise InputError(f"not valid UTF-8 text: byte {raw[:1].hex()!r} at character {exc.start}") from None
    return value


def prepare_images(
    preprocess: Callable, max_bytes: int | None = MAX_FILE_BYTES, decode: str = "exact"
) -> Callable[[int, list[Item]], Batch]:
    preprocess.draft_side(decode)  # an unknown decode fails here, not as every item's error

    def prepare(start: int, items: list[Item]) -> Batch:
        return _prepare(start, items, lambda value: image_pixels(preprocess, value, max_bytes, decode), np.stack)

    return prepare


def prepare_texts(start: int, items: list[Item]) -> Batch:
    return _prepare(start, items, check_text, list)


def prepare_pairs(
    preprocess: Callable, max_bytes: int | None = MAX_FILE_BYTES, decode: str = "exact"
) -> Callable[[int, list[Item]], Batch]:
    """``prepare_images`` for ImageText items: the pixels and the caption of each, or the item's error."""
    preprocess.draft_side(decode)

    def pair(value: object) -> tuple[np.ndarray, str]:
        if not isinstance(value, ImageText):
            raise InputError(f"expected an image and its caption, got {type(value).__name__}")
        for part in value:
            if isinstance(part, Exception):
                raise part
        return image_pixels(preprocess, value.image, max_bytes, decode), check_text(value.text)

    def prepare(start: int, items: list[Item]) -> Batch:
        return _prepare(start, items, pair, lambda good: (np.stack([p for p, _ in good]), [t for _, t in good]))

    return prepare


def tower_steps(model, tower: str, max_bytes: int | None = MAX_FILE_BYTES, decode: str = "exact"):
    """(prepare, encode) of ``tower``: "visual", "textual", or "both" (vectors [N, 2, dim]: image, text)."""
    if tower == "visual":
        return prepare_images(model.preprocess, max_bytes, decode), model.encode_pixels
    if tower == "textual":
        return prepare_texts, model.encode_text

    def encode(payload: tuple[np.ndarray, list[str]]) -> np.ndarray:
        return np.stack([model.encode_pixels(payload[0]), model.encode_text(payload[1])], axis=1)

    return prepare_pairs(model.preprocess, max_bytes, decode), encode


def vector_shape(tower: str, dim: int) -> tuple[int, ...]:
    """The shape of one item's vectors: [dim], or [2, dim] (image, text) for "both"."""
    return (2, dim) if tower == "both" else (dim,)


def _prepare(start: int, items: list[Item], one: Callable, stack: Callable) -> Batch:
    positions, ids, good, errors, meta = [], [], [], [], []
    for offset, item in enumerate(items):
        try:
            if isinstance(item.value, Exception):
                raise item.value  # the source already knows why this item cannot be used
            good.append(one(item.value))
        # Files come from outside: whatever Pillow (or a plugin) raises on one of
        # them is that file's failure, recorded, never the end of the run.
        except Exception as exc:  # noqa: BLE001
            errors.append(ItemError(start + offset, item.id, type(exc).__name__, str(exc)))
            continue
        positions.append(start + offset)
        ids.append(item.id)
        meta.append(item.meta)
    return Batch(start, len(items), positions, ids, stack(good) if good else None, errors, meta)


def chunks(items: Iterator[Item], start: int, batch_size: int, part_size: int) -> Iterator[tuple[int, list[Item]]]:
    """(position, items) of consecutive batches from ``start``; none of them crosses a multiple of ``part_size``."""
    position, chunk = start, []
    for item in items:
        chunk.append(item)
        end = position + len(chunk)
        if len(chunk) == batch_size or end % part_size == 0:
            yield position, chunk
            position, chunk = end, []
    if chunk:
        yield position, chunk


def embed_batches(
    model,
    tower: str,
    batches: Iterator[tuple[int, list[Item]]],
    *,
    workers: int,
    max_bytes: int | None = MAX_FILE_BYTES,
    decode: str = "exact",
) -> Iterator[tuple[Batch, np.ndarray]]:
    """(batch, its float32 vectors) for each of ``batches``, in order, embedded on ``workers`` threads."""
    prepare, encode = tower_steps(model, tower, max_bytes, decode)
    empty = np.zeros((0, *vector_shape(tower, model.embed_dim)), np.float32)

    def work(start: int, items: list[Item]) -> tuple[Batch, np.ndarray]:
        batch = prepare(start, items)
        vectors = encode(batch.payload) if batch.ids else empty
        return batch._replace(payload=None), vectors  # the pixels are done with; only the vectors wait in line

    return in_order(batches, work, workers=workers, ahead=2 * workers)


def in_order(tasks: Iterator[tuple], fn: Callable, *, workers: int, ahead: int) -> Iterator:
    """``fn(*task)`` of every task, run on ``workers`` threads, yielded in task order, ``ahead`` at most in flight."""
    if workers < 1 or ahead < 1:
        raise InputError(f"workers and ahead must be >= 1, got {workers} and {ahead}")
    pool = ThreadPoolExecutor(workers, thread_name_prefix="clip-onnx-embed")
    pending: deque[Future] = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(fn, *task))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # Reached on success, on an error and when the consumer stops early: queued work is dropped.
        pool.shutdown(wait=True, cancel_futures=True)
