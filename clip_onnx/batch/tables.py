"""One column of a parquet, CSV or TSV table as dataset items, whatever state the file is in.

A table is opened once, as a regular file (a FIFO named data.parquet never
blocks a run), and read row group by row group.  What cannot be read becomes
the failure of the rows it holds, so one corrupt data page costs the rows of
its row group (from the first unread one), never the run: each of them gets an
error naming the file and the row range.  A file whose schema or footer cannot
be read at all is one InputError before anything is embedded.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clip_onnx.batch.inputs import Item, open_input
from clip_onnx.errors import InputError

_PARQUET_SUFFIXES = (".parquet", ".pq")
_TEXT_TYPES = ("string", "large_string", "string_view")
_BINARY_TYPES = ("binary", "large_binary", "binary_view")
_BATCH_ROWS = 1024


class TableColumn:
    """One column of a parquet, CSV or TSV table; the id is ``FILE:ROW`` with rows counted from 0.

    A string column holds texts, or image paths when the tower is "image"; a
    binary column holds encoded images.  CSV and TSV columns are strings.
    """

    def __init__(self, path: str, column: str):
        self.path, self.column = path, column
        self.kind = "parquet" if Path(path).suffix.lower() in _PARQUET_SUFFIXES else "csv"
        names, self.is_text = self._schema()
        if column not in names:
            raise InputError(f"table {path!r} has no column {column!r}; its columns are {names}")

    def _schema(self) -> tuple[list[str], bool]:
        if self.kind == "csv":
            with _csv_reader(self.path) as reader:
                return list(reader.fieldnames or []), True
        with self._parquet_file() as table:
            schema = table.schema_arrow
        field = schema.field(self.column) if self.column in schema.names else None
        is_text = field is not None and str(field.type) in _TEXT_TYPES
        if field is not None and not is_text and str(field.type) not in _BINARY_TYPES:
            raise InputError(
                f"column {self.column!r} of {self.path!r} is {field.type}; expected strings (texts "
                "or image paths) or binary (encoded images)"
            )
        return list(schema.names), is_text

    def check_tower(self, tower: str) -> None:
        if tower == "text" and not self.is_text:
            raise InputError(
                f"column {self.column!r} of {self.path!r} holds bytes, not texts; embed it with --tower image"
            )

    def items(self) -> Iterator[Item]:
        values = self._csv_values() if self.kind == "csv" else self._parquet_values()
        return (Item(f"{self.path}:{row}", value) for row, value in enumerate(values))

    def count(self) -> int:
        if self.kind == "parquet":
            with self._parquet_file() as table:
                return table.metadata.num_rows
        return sum(1 for _ in self._csv_values())

    @contextmanager
    def _parquet_file(self):
        """The table as a ``pyarrow.parquet.ParquetFile`` over a file opened only if it is a regular one."""
        pq = _parquet()
        with open_input(self.path, "table") as handle:
            try:
                table = pq.ParquetFile(handle)
            except Exception as exc:  # pyarrow's ArrowInvalid and friends for a file that is not parquet
                raise InputError(f"cannot read parquet table {self.path!r}: {exc}") from None
            yield table

    def _parquet_values(self) -> Iterator[object]:
        """Every value of the column, row by row; an exception as the value of each row that cannot be read."""
        with self._parquet_file() as table:
            first = 0
            for group in range(table.num_row_groups):
                rows = table.metadata.row_group(group).num_rows
                done = 0
                try:
                    for batch in table.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group], columns=[self.column]):
                        yield from _column_values(batch.column(0), self.path, first + done)
                        done += batch.num_rows
                # Whatever the decoder raises on damaged data (ArrowInvalid, OSError "Couldn't deserialize
                # thrift", ...) is the failure of the rows it could not give.
                except Exception as exc:  # noqa: BLE001
                    error = InputError(
                        f"cannot read rows {first + done}..{first + rows - 1} of table {self.path!r} "
                        f"(row group {group}): {type(exc).__name__}: {str(exc).strip()}"
                    )
                    yield from (error for _ in range(max(rows - done, 0)))
                first += rows

    def _csv_values(self) -> Iterator[object]:
        with _csv_reader(self.path) as reader:
            while True:
                line = reader.line_num + 1  # where the next row starts
                try:
                    row = next(reader)
                except StopIteration:
                    return
                # One malformed row (a field over csv's size limit) is that row's failure; the reader has
                # consumed its line and goes on with the next one.
                except csv.Error as exc:
                    yield InputError(f"cannot read the row at line {line} of table {self.path!r}: {exc}")
                    continue
                # An empty CSV cell is a missing value, as pandas and pyarrow read it.
                yield row.get(self.column) or None


def _column_values(column, path: str, first: int) -> list[object]:
    """The Python values of one batch of a column; a value that does not convert (bad UTF-8) is its row's error."""
    try:
        return column.to_pylist()
    except Exception:  # noqa: BLE001 - some value does not convert: find which, one by one
        values: list[object] = []
        for offset in range(len(column)):
            try:
                values.append(column[offset].as_py())
            except Exception as exc:  # noqa: BLE001
                values.append(InputError(f"cannot read row {first + offset} of table {path!r}: {exc}"))
        return values


@contextmanager
def _csv_reader(path: str) -> Iterator[csv.DictReader]:
    with open_input(path, "table") as handle:
        # Undecodable bytes survive as surrogates, so that only the cells holding them fail (check_text).
        text = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
        try:
            yield csv.DictReader(text, delimiter="\t" if path.lower().endswith(".tsv") else ",")
        except (OSError, csv.Error) as exc:
            raise InputError(f"cannot read table {path!r}: {exc}") from None
        finally:
            text.detach()  # the handle is closed by open_input


def _parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            "reading or writing parquet needs pyarrow: pip install 'clip-onnx[data]' (or write .npy with --format npy)"
        ) from None
    return pq
