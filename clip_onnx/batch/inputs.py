"""What the dataset pipeline reads: one item of a source, and the one way to open a file a user named.

Below ``sources`` and ``tables``, which both build on it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from clip_onnx.errors import InputError
from clip_onnx.files import NotRegularFileError, open_regular


class Item(NamedTuple):
    id: str
    # Images: a path (str) or encoded bytes; texts: a str; both towers: a shards.ImageText. None for an
    # empty table cell, or an exception that says why the item cannot be used.
    value: object
    # Columns the output keeps beside the vectors (a shard's url and caption); None: the source has none.
    meta: dict | None = None


@contextmanager
def open_input(path: str, what: str) -> Iterator[io.BufferedReader]:
    """``path`` open for reading if it is a regular file; InputError naming ``what`` it is and why not."""
    try:
        handle = open_regular(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path!r} does not exist") from None
    except NotRegularFileError as exc:
        raise InputError(f"{what} {path!r} is {exc.kind}, not a regular file") from None
    except (OSError, ValueError) as exc:
        raise unreadable(path, what, exc) from None
    with handle:
        yield handle


def unreadable(path: str, what: str, exc: Exception) -> InputError:
    return InputError(f"cannot read {what} {path!r}: {getattr(exc, 'strerror', None) or exc}")
