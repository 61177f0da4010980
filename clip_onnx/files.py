"""File helpers every part of clip-onnx shares: sha256 and atomic writes.

Torch-free.  One copy of each, so that a bundle, a TensorRT plan, an embedding
file and a Triton repository are hashed and published the same way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: os.PathLike | str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so memory stays flat for multi-GB graphs."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def atomic_path(target: os.PathLike | str) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``target``; on success it replaces ``target`` atomically.

    Whatever the block writes to the yielded path appears under ``target`` only
    when the block finishes without an exception; otherwise the temporary file is
    removed, so a crash or Ctrl-C never leaves a half-written ``target``.  The
    temporary file lives in the same directory, so the final rename never crosses
    file systems.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the result the mode an ordinary open() would.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: os.PathLike | str, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: os.PathLike | str, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def current_umask() -> int:
    """The process umask, read without os.umask's set-and-restore (which races other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
