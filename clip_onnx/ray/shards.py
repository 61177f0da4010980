"""webdataset shards on Ray: one zero-CPU read task per shard, streaming its samples as rows.

The task reads with the very reader `clip-onnx embed` uses (``batch.shards``),
so ids (``SHARD:KEY``, SHARD as the user gave it), the url and caption columns
and every bad sample's reason are the same on one machine and on a cluster.
Rows leave the task in small tables, so a shard of thousands of photos never
has to fit one block.  A lost node's read task is rerun whole by Ray: a shard
is read again from its start and gives the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from clip_onnx.batch.inputs import Item
from clip_onnx.batch.pipeline import MAX_FILE_BYTES, check_text
from clip_onnx.batch.shards import META_COLUMNS, ImageText, count_items, shard_items, shard_paths
from clip_onnx.ray.embedder import IO_TASK_ARGS, READ_ERROR

# Samples per table a read task hands to Ray Data: about 2 MB of photo-sized JPEGs.
_ROWS_PER_TABLE = 16
# The columns a shard's rows carry into the embedder: the image, the caption.
SHARD_COLUMNS = {"visual": "bytes", "textual": "text", "both": ("bytes", "text")}


def read_shards(source: str, tower: str, max_file_bytes: int | None = MAX_FILE_BYTES):
    """(dataset, rows) of the shards ``source`` names (a path, glob or brace range), for ``tower``.

    The dataset has ``id``, ``bytes`` (the image), ``text`` (the caption), ``url``,
    ``caption`` and ``read_error`` (why a sample cannot be used, as ``embed``
    records it); one read task per shard.
    """
    import ray.data

    shards = shard_paths(source)
    rows = [{"shard": shard, "path": os.path.abspath(shard)} for shard in shards]
    total = sum(count_items(shard) for shard in shards)
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _read,
        fn_kwargs={"tower": tower, "max_file_bytes": max_file_bytes},
        batch_size=1,
        batch_format="pyarrow",
        **IO_TASK_ARGS,
    )
    return ds, total


def _read(batch, tower: str, max_file_bytes: int | None) -> Iterator:
    """The rows of the shards in ``batch`` (``shard`` as given, ``path`` to open), a few at a time."""
    for name, path in zip(batch.column("shard").to_pylist(), batch.column("path").to_pylist(), strict=True):
        rows: list[dict] = []
        for item in shard_items(path, tower, max_file_bytes, name=name):
            rows.append(_row(item))
            if len(rows) == _ROWS_PER_TABLE:
                yield _table(rows)
                rows = []
        if rows:
            yield _table(rows)


def _row(item: Item) -> dict:
    value = item.value
    image, text = (value.image, value.text) if isinstance(value, ImageText) else (value, value)
    row = {"id": item.id, "bytes": None, "text": None, READ_ERROR: None, **dict.fromkeys(META_COLUMNS)}
    row.update(item.meta or {})
    try:
        for part in (image, text):
            if isinstance(part, Exception):
                raise part
        row["bytes"] = image if isinstance(image, bytes) else None
        row["text"] = check_text(text) if isinstance(text, str) else None  # surrogates cannot travel as UTF-8
    except Exception as exc:  # noqa: BLE001 - the sample's failure, recorded as embed records it
        row["bytes"] = row["text"] = None
        row[READ_ERROR] = f"{type(exc).__name__}: {exc}"
    return row


def _table(rows: list[dict]):
    import pyarrow as pa

    columns = {"id": pa.string(), "bytes": pa.binary(), "text": pa.string(), READ_ERROR: pa.string()}
    columns.update(dict.fromkeys(META_COLUMNS, pa.string()))
    return pa.table({name: pa.array([row[name] for row in rows], kind) for name, kind in columns.items()})
