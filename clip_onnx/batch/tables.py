"""One column of a parquet, CSV or TSV table as dataset items, whatever state the file is in.

A table is opened once, as a regular file (a FIFO named data.parquet never
blocks a run), and read row group by row group.  What cannot be read becomes
the failure of the rows it holds, so one corrupt data page costs the rows of
its row group (from the first unread one), never the run: each of them gets an
error naming the file and the row range.  A file whose schema or footer cannot
be read at all is one InputError before anything is embedded.

CSV and TSV go through pyarrow's streaming CSV reader, not Python's csv
module, whose 128 KiB field limit failed long captions that CLIP would embed
(their first tokens).  A row must fit one read block (``_CSV_BLOCK``); a row
with the wrong number of fields fails alone, at its place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clip_onnx.batch.inputs import Item, open_input
from clip_onnx.errors import InputError

_PARQUET_SUFFIXES = (".parquet", ".pq")
_TEXT_TYPES = ("string", "large_string", "string_view")
_BINARY_TYPES = ("binary", "large_binary", "binary_view")
_BATCH_ROWS = 1024
# pyarrow reads a CSV in blocks that must each hold whole rows: the largest row (caption) that is read.
_CSV_BLOCK = 16 << 20


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
            # Opening reads the first block; its malformed rows are the values' concern, not the header's.
            with _csv_reader(self.path, malformed=lambda row: "skip") as reader:
                return list(reader.schema.names), True
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
        """Every cell of the column; a row that cannot be read is an error at its place (rows from 0)."""
        invalid: list[tuple[int, InputError]] = []  # (position, error) of malformed rows, in file order
        position = 0

        def malformed(row) -> str:
            # row.number counts records from 1, the header included; None where pyarrow does not know it.
            at = position if row.number is None else row.number - 2
            reason = f"expected {row.expected_columns} fields, got {row.actual_columns}"
            invalid.append(
                (at, InputError(f"cannot read row {at} of table {self.path!r}: {reason}: {row.text[:80]!r}"))
            )
            return "skip"

        with _csv_reader(self.path, self.column, malformed) as reader:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - pyarrow's ArrowInvalid for a row it cannot parse
                    yield from (error for _, error in invalid)
                    position += len(invalid)
                    yield InputError(f"cannot read table {self.path!r} from row {position} on: {exc}")
                    return
                for cell in batch.column(0).to_pylist():
                    while invalid and invalid[0][0] <= position:
                        yield invalid.pop(0)[1]
                        position += 1
                    # Undecodable bytes survive as surrogates, so that only the cells holding them fail (check_text).
                    yield cell.decode("utf-8", "surrogateescape") if cell else None  # an empty cell is missing
                    position += 1
        yield from (error for _, error in invalid)


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
def _csv_reader(path: str, column: str | None = None, malformed=None):
    """A pyarrow CSV stream of ``path`` (TSV by suffix), of ``column`` alone as bytes when it is named."""
    pa, pc = _pyarrow_csv()
    with open_input(path, "table") as handle:
        convert = pc.ConvertOptions(include_columns=[column], column_types={column: pa.binary()}) if column else None
        try:
            reader = pc.open_csv(
                handle,
                read_options=pc.ReadOptions(use_threads=False, block_size=_CSV_BLOCK),  # one thread: rows numbered
                parse_options=pc.ParseOptions(
                    delimiter="\t" if path.lower().endswith(".tsv") else ",",
                    newlines_in_values=True,
                    invalid_row_handler=malformed,
                ),
                convert_options=convert,
            )
        except Exception as exc:  # noqa: BLE001 - ArrowInvalid: empty, or no header pyarrow can read
            raise InputError(f"cannot read table {path!r}: {exc}") from None
        yield reader


def _pyarrow_csv():
    try:
        import pyarrow as pa
        import pyarrow.csv as pc
    except ImportError:
        raise InputError("reading CSV or TSV tables needs pyarrow: pip install 'clip-onnx[data]'") from None
    return pa, pc


def _parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            "reading or writing parquet needs pyarrow: pip install 'clip-onnx[data]' (or write .npy with --format npy)"
        ) from None
    return pq
