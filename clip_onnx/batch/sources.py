"""Where a dataset's items come from: image files, folders, globs, @lists, text files, table columns, shards.

Every source is expanded lazily and always in the same order (folders sorted
level by level, glob matches sorted), so one run can count its items, embed
them and later resume over the very same sequence without holding it in memory.
"""

from __future__ import annotations

import glob
import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from clip_onnx.batch.inputs import Item, open_input, unreadable
from clip_onnx.batch.shards import META_COLUMNS, ShardSource, is_shard_source
from clip_onnx.batch.tables import TableColumn
from clip_onnx.errors import InputError

log = logging.getLogger(__name__)

# What a folder walk or a glob keeps: the formats Pillow decodes that photo collections use.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
TABLE_EXTENSIONS = frozenset({".parquet", ".pq", ".csv", ".tsv"})
# The CLI's tower names and the bundle's; "both" embeds a shard's image and caption into one row.
TOWER_NAMES = {"image": "visual", "text": "textual", "both": "both"}
_GLOB_CHARS = frozenset("*?[")


class Sources:
    """An ordered, re-iterable sequence of Items for one tower; build it with ``plan_sources``."""

    def __init__(self, tower: str, parts: Sequence):
        self.tower = tower
        self._parts = tuple(parts)
        # Shards carry metadata (url, caption) that the output keeps as columns.
        self.meta_columns = META_COLUMNS if any(isinstance(p, ShardSource) for p in self._parts) else ()

    def items(self) -> Iterator[Item]:
        for part in self._parts:
            yield from part.items()

    def count(self) -> int:
        """How many items there are; raises InputError for a folder or glob that holds no image."""
        return sum(part.count() for part in self._parts)


def plan_sources(
    sources: Iterable[str] = (),
    *,
    images: Iterable[str] = (),
    texts: Iterable[str] = (),
    text_files: Iterable[str] = (),
    column: str | None = None,
    tower: str | None = None,
    max_file_bytes: int | None = None,
) -> Sources:
    """Check the arguments of `clip-onnx embed` and return the items they name.

    ``sources`` are image files, folders (walked recursively, images by
    extension, hidden entries skipped), glob patterns, ``@list.txt`` files (one
    image path a line), webdataset shards (``.tar`` paths, globs or brace
    ranges such as ``shards/{00000..00099}.tar``) and, with ``column``,
    parquet/CSV/TSV tables. ``images`` are image paths taken as given;
    ``texts`` are prompts, ``text_files`` hold one prompt a line. ``tower`` is
    "image", "text" or, for shards only, "both"; by default it is "text" when
    texts are given or ``column`` names a string column, else "image".
    ``max_file_bytes`` caps a shard's members (files are capped when read).
    """
    sources, images, text_files = (
        _paths(x, name) for x, name in ((sources, "sources"), (images, "images"), (text_files, "text_files"))
    )
    texts = _many(texts, "texts", "texts")
    if tower is not None and tower not in TOWER_NAMES:
        raise InputError(f"tower must be one of {sorted(TOWER_NAMES)}, got {tower!r}")
    shards = [s for s in sources if is_shard_source(s)]
    if tower == "both" and (images or texts or text_files or len(shards) < len(sources) or not shards):
        raise InputError(
            "--tower both embeds the image and the caption of each sample of webdataset shards (.tar "
            "SOURCEs) into one row; give only shards, or embed other sources with --tower image or text"
        )
    tables = [s for s in sources if Path(s).suffix.lower() in TABLE_EXTENSIONS and not s.startswith("@")]
    if tables and column is None:
        raise InputError(f"SOURCE {tables[0]!r} is a table; name the column to embed with --column")
    if column is not None and not tables:
        raise InputError("--column names a column of a parquet/CSV/TSV SOURCE, and no SOURCE is such a table")
    columns = [TableColumn(t, column) for t in tables]
    if tower is None:
        tower = "text" if texts or text_files or any(c.is_text for c in columns) else "image"
    parts = _parts(tower, [s for s in sources if s not in tables], images, texts, text_files, max_file_bytes)
    for c in columns:
        c.check_tower(tower)
    parts += columns
    if not any(not isinstance(p, _Literal) or p.rows for p in parts):
        raise InputError(
            "nothing to embed: give image SOURCEs (files, folders, globs, @list.txt), webdataset shards "
            "(.tar), a table with --column, --text-file, or either --image or --text"
        )
    return Sources(TOWER_NAMES[tower], [p for p in parts if not isinstance(p, _Literal) or p.rows])


def _parts(tower: str, sources: list[str], images: list[str], texts: list, text_files: list[str], max_bytes) -> list:
    """The sources of ``tower`` other than tables, in the order given; refuses images and texts in one run."""

    def named(source: str):
        return ShardSource(source, TOWER_NAMES[tower], max_bytes) if is_shard_source(source) else None

    if tower == "text":
        others = [s for s in sources if not is_shard_source(s)]
        if images or others:
            raise InputError(f"images ({(images + others)[0]!r}) and texts in one run: embed them in two runs")
        return [_Literal((t, t) for t in texts), *(_TextLines(f) for f in text_files), *map(named, sources)]
    if texts or text_files:
        raise InputError("texts (--text, --text-file) and images in one run: embed them in two runs")
    return [_Literal((p, p) for p in images), *(named(s) or _image_source(s) for s in sources)]


def _many(values: Iterable, name: str, what: str) -> list:
    """``values`` as a list, refusing one bare value where a collection is meant (a str would give its characters)."""
    if isinstance(values, (str, bytes, bytearray, os.PathLike)):
        raise InputError(
            f"{name} must be a list of {what}, got the single {type(values).__name__} {values!r}; "
            f"pass [{values!r}] to mean one"
        )
    try:
        return list(values)
    except TypeError:
        raise InputError(f"{name} must be a list of {what}, got {type(values).__name__}") from None


def _paths(values: Iterable, name: str) -> list[str]:
    """``values`` as a list of path strings (os.PathLike items accepted), refusing a bare path."""
    paths = []
    for value in _many(values, name, "paths"):
        if not isinstance(value, (str, os.PathLike)):
            raise InputError(f"{name} must hold paths (str or os.PathLike), got {type(value).__name__} {value!r}")
        paths.append(os.fspath(value))
    return paths


class _Literal:
    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self.rows = [Item(str(i), v) for i, v in pairs]

    def items(self) -> Iterator[Item]:
        return iter(self.rows)

    def count(self) -> int:
        return len(self.rows)


def _image_source(source: str):
    if source.startswith("@"):
        return _ListFile(source[1:])
    if os.path.isdir(source):
        return _Folder(source)
    if not os.path.lexists(source) and _GLOB_CHARS & set(source):
        return _Glob(source)
    # A named file that is missing or unreadable is one bad item, recorded like any undecodable file.
    return _Literal([(source, source)])


def walk_images(folder: str) -> Iterator[str]:
    """Image files under ``folder``, depth first, names sorted at every level, hidden entries skipped.

    Hidden names are skipped because photo folders carry ``.thumbnails/`` and
    macOS ``._IMG.jpg`` companions that are not images.
    """
    for root, dirs, files in os.walk(folder, onerror=_walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.join(root, name)


def _walk_error(exc: OSError) -> None:
    # os.walk hands over what it cannot list; a missing subfolder must not pass in silence.
    raise InputError(f"cannot list folder {exc.filename!r}: {exc.strerror}") from None


class _Folder:
    def __init__(self, folder: str):
        self.folder = folder

    def items(self) -> Iterator[Item]:
        return (Item(p, p) for p in walk_images(self.folder))

    def count(self) -> int:
        n = sum(1 for _ in walk_images(self.folder))
        if not n:
            raise InputError(
                f"folder {self.folder!r} holds no image files (looked for "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}; hidden files and folders are skipped)"
            )
        return n


class _Glob:
    def __init__(self, pattern: str):
        self.pattern = pattern

    def _paths(self) -> Iterator[str]:
        for match in sorted(glob.iglob(self.pattern, recursive=True)):
            if os.path.isdir(match):
                yield from walk_images(match)
            elif os.path.splitext(match)[1].lower() in IMAGE_EXTENSIONS:
                yield match

    def items(self) -> Iterator[Item]:
        return (Item(p, p) for p in self._paths())

    def count(self) -> int:
        n = sum(1 for _ in self._paths())
        if not n:
            raise InputError(
                f"glob {self.pattern!r} matches no image files (quote it so that the shell "
                "leaves it to clip-onnx; '**' matches folders recursively)"
            )
        return n


def _lines(path: str, what: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, stripped line) of every line of ``path`` that is not blank.

    Bytes that are not UTF-8 come through as surrogates (Python's own way of
    naming such files), so that only their line fails, not the file.
    """
    with open_input(path, what) as handle:
        try:
            with io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape") as f:
                for number, line in enumerate(f, 1):
                    line = line.strip()
                    if line:
                        yield number, line
        except (OSError, ValueError) as exc:
            raise unreadable(path, what, exc) from None


class _ListFile:
    def __init__(self, path: str):
        self.path = path

    def items(self) -> Iterator[Item]:
        return (Item(p, p) for _, p in _lines(self.path, "list file"))

    def count(self) -> int:
        return sum(1 for _ in _lines(self.path, "list file"))


class _TextLines:
    """One prompt per non-blank line; the id is ``FILE:LINE`` with lines counted from 1."""

    def __init__(self, path: str):
        self.path = path

    def items(self) -> Iterator[Item]:
        return (Item(f"{self.path}:{n}", text) for n, text in _lines(self.path, "text file"))

    def count(self) -> int:
        return sum(1 for _ in _lines(self.path, "text file"))
