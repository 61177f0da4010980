"""The finished outputs of `clip-onnx embed`, assembled part by part from ``OUT.partial/``.

Parquet: one file with columns ``id`` (string) and ``embedding``
(fixed_size_list<float32>[dim]), or ``image_embedding`` and ``text_embedding``
for ``--tower both``, then the sources' metadata columns (a shard's ``url`` and
``caption``), one row group per part.  npy: ``OUT.npy``,
float32 [rows, dim], beside ``OUT.ids.txt`` (one id a line) for users without
pyarrow.  Failed items go to ``OUT.errors.jsonl``.  Each file appears under its
final name only when whole, and memory holds one part at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clip_onnx.batch.parts import Part
from clip_onnx.errors import InputError
from clip_onnx.files import atomic_path

log = logging.getLogger(__name__)

FORMATS = ("parquet", "npy")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy"}


class Outputs(NamedTuple):
    main: Path
    format: str
    ids: Path | None  # npy only
    errors: Path


def plan_outputs(out, fmt: str | None = None) -> Outputs:
    """Check ``out`` and name the files a run writes; nothing is created here.

    The format is ``fmt`` or follows the suffix (.npy: npy, anything else:
    parquet). Sidecars drop the suffix: ``emb.npy`` goes with ``emb.ids.txt``
    and ``emb.errors.jsonl``.
    """
    out = Path(out)
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"format must be one of {FORMATS}, got {fmt!r}")
    by_suffix = _SUFFIXES.get(out.suffix.lower())
    if fmt is not None and by_suffix is not None and fmt != by_suffix:
        raise InputError(
            f"output {str(out)!r} ends in {out.suffix} but the format is {fmt}; name it "
            f"{out.with_suffix('.' + fmt).name} or drop --format"
        )
    fmt = fmt or by_suffix or "parquet"
    if out.is_dir():
        raise InputError(
            f"output {str(out)!r} is a folder; give a file name inside it, such as {str(out / ('embeddings.' + fmt))!r}"
        )
    if not out.parent.is_dir():
        raise InputError(f"the folder of output {str(out)!r} does not exist; create {str(out.parent)!r} first")
    if fmt == "parquet":
        _pyarrow()
    stem = out.with_suffix("") if by_suffix else out
    return Outputs(
        out,
        fmt,
        stem.with_name(stem.name + ".ids.txt") if fmt == "npy" else None,
        stem.with_name(stem.name + ".errors.jsonl"),
    )


def check_id(outputs: Outputs, item_id: str) -> None:
    if outputs.ids is not None and ("\n" in item_id or "\r" in item_id):
        raise InputError(
            f"the id has a line break and cannot be one line of {outputs.ids.name}; "
            "write parquet instead (--format parquet)"
        )
    if printable_id(item_id) != item_id:
        raise InputError(
            "the name is not valid UTF-8 (shown with \\x escapes) and cannot be an id; rename the file "
            "to UTF-8 (for example with convmv)"
        )


def printable_id(item_id: str) -> str:
    """``item_id`` as UTF-8 text: bytes a file name held that are not UTF-8 (surrogates) become \\xNN escapes."""
    try:
        item_id.encode("utf-8")
    except UnicodeEncodeError:
        return item_id.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return item_id


def write_outputs(
    outputs: Outputs, parts: Sequence[Part], dim: int, metadata: Mapping[str, str], meta_columns: Sequence[str] = ()
) -> tuple[int, int]:
    """Assemble the final files from ``parts``; returns (rows written, errors recorded).

    ``metadata["tower"]`` "both" writes image and text columns; ``meta_columns`` are
    string columns from the items' metadata (parquet only).  The errors and ids
    files are written first and the main file last, so a main file under its
    final name always has its sidecars beside it.
    """
    failed = _write_errors(outputs.errors, parts)
    if outputs.format == "npy":
        rows = _write_npy(outputs.main, outputs.ids, parts, dim)
    else:
        rows = _write_parquet(outputs.main, parts, dim, metadata, meta_columns)
    return rows, failed


def _write_errors(target: Path, parts: Sequence[Part]) -> int:
    count = 0
    records = (json.loads(line) for part in parts for line in part.load("errors")["errors"].tolist())
    first = next(records, None)
    if first is None:
        # No failures this time: an errors file left by an earlier run must not describe this output.
        target.unlink(missing_ok=True)
        return 0
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for record in (first, *records):
            record.pop("position", None)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def _write_npy(target: Path, ids_target: Path, parts: Sequence[Part], dim: int) -> int:
    rows = sum(len(part.load("ids")["ids"]) for part in parts)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": (rows, dim)}
    with atomic_path(ids_target) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for part in parts:
            f.writelines(i + "\n" for i in part.load("ids")["ids"].tolist())
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        # The header np.save writes, then the rows part by part: the array is never whole in memory.
        np.lib.format.write_array_header_1_0(f, header)
        for part in parts:
            f.write(part.load("vectors")["vectors"].astype("<f4", copy=False).tobytes())
    return rows


def _write_parquet(
    target: Path, parts: Sequence[Part], dim: int, metadata: Mapping[str, str], meta_columns: Sequence[str]
) -> int:
    pa, pq = _pyarrow()
    vectors = VECTOR_COLUMNS[metadata.get("tower") == "both"]
    fields = [("id", pa.string())] + [(name, pa.list_(pa.float32(), dim)) for name in vectors]
    fields += [(name, pa.string()) for name in meta_columns]
    schema = pa.schema(fields, metadata={"clip_onnx": json.dumps(dict(metadata), sort_keys=True)})
    rows = 0
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            data = part.load("ids", "vectors")
            if not len(data["ids"]):
                continue
            extra = meta_arrays(pa, part.meta(len(data["ids"])), meta_columns)
            writer.write_table(
                embedding_table(pa, data["ids"].tolist(), data["vectors"], dim, schema=schema, extra=extra)
            )
            rows += len(data["ids"])
    return rows


# The vector columns of one tower, and of "both" (vectors [N, 2, dim]).
VECTOR_COLUMNS = {False: ("embedding",), True: ("image_embedding", "text_embedding")}


def meta_arrays(pa, meta: Sequence[Mapping | None], columns: Sequence[str]) -> dict:
    """String columns ``columns`` from each row's metadata (null where a row has none)."""
    return {name: pa.array([m.get(name) if m else None for m in meta], pa.string()) for name in columns}


def embedding_table(pa, ids: list, vectors: np.ndarray, dim: int, *, mask=None, schema=None, extra=None):
    """A pyarrow table of ``id`` and the vectors (fixed-size lists of float32; null rows where ``mask``).

    ``vectors`` [N, dim] make ``embedding``; [N, 2, dim] (``--tower both``) make
    ``image_embedding`` and ``text_embedding``.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    planes = [vectors] if vectors.ndim == 2 else [vectors[:, 0], vectors[:, 1]]
    columns = {"id": pa.array(ids, pa.string())}
    for name, plane in zip(VECTOR_COLUMNS[vectors.ndim == 3], planes, strict=True):
        values = pa.array(np.ascontiguousarray(plane).reshape(-1))
        columns[name] = pa.FixedSizeListArray.from_arrays(values, dim, mask=mask)
    return pa.table({**columns, **(extra or {})}, schema=schema)


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            "writing parquet needs pyarrow: pip install 'clip-onnx[data]', or write "
            "OUT.npy with OUT.ids.txt (--format npy)"
        ) from None
    return pa, pq
