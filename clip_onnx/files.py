"""File helpers every part of clip-onnx shares: sha256 and atomic writes.

Torch-free.  One copy of each, so that a bundle, a TensorRT plan, an embedding
file and a Triton repository are hashed and published the same way.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


def sha256_file(path: os.PathLike | str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so memory stays flat for multi-GB graphs."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class NotRegularFileError(OSError):
    """A path names a FIFO, socket, device or directory where a regular file is needed."""

    def __init__(self, path: os.PathLike | str, kind: str):
        super().__init__(f"{str(path)!r} is {kind}, not a regular file")
        self.filename = str(path)
        self.kind = kind

    def __str__(self) -> str:  # OSError would show "[Errno None] None: PATH" once filename is set
        return str(self.args[0])


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words: "a regular file", "a named pipe (FIFO)", ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def open_regular(path: os.PathLike | str) -> BinaryIO:
    """Open ``path`` for binary reading only if it is a regular file.

    Opening a FIFO blocks until a writer appears, and opening a device can have
    side effects (a tape rewinds, a terminal becomes ours), so the kind is
    checked before the open, and again on the descriptor (O_NONBLOCK keeps a
    FIFO swapped in meanwhile from blocking).  Raises FileNotFoundError,
    PermissionError or NotRegularFileError (all OSError).
    """
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegularFileError(path, file_kind(before.st_mode))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):
            raise NotRegularFileError(path, file_kind(after.st_mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class FileTooLargeError(OSError):
    """A regular file is larger than the cap a reader was given (a 50 GB video named photo.jpg)."""

    def __init__(self, path: os.PathLike | str, size: int | None, limit: int):
        # size None: the file said it was smaller, then gave more (it grew, or it is a /proc file)
        amount = f"over the {format_bytes(limit)} limit"
        super().__init__(
            f"{str(path)!r} is {amount}" if size is None else f"{str(path)!r} is {format_bytes(size)}, {amount}"
        )
        self.filename = str(path)
        self.size, self.limit = size, limit

    def __str__(self) -> str:
        return str(self.args[0])


def read_regular(path: os.PathLike | str, max_bytes: int | None = None) -> bytes:
    """The whole content of ``path`` if it is a regular file of at most ``max_bytes`` bytes.

    What a dataset job reads, so that no item can block it (a FIFO) or exhaust
    memory (a symlink to /dev/zero, a huge file): raises FileNotFoundError,
    PermissionError, IsADirectoryError (as ``open`` would), NotRegularFileError
    or FileTooLargeError.  The read itself is capped too, so a file that grows
    meanwhile, or one whose size the kernel reports as 0 (/proc), stays bounded.
    """
    try:
        handle = open_regular(path)
    except NotRegularFileError as exc:
        if exc.kind == "a directory":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)) from None
        raise
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise FileTooLargeError(path, size, max_bytes)
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise FileTooLargeError(path, None, max_bytes)
    return data


def format_bytes(count: int) -> str:
    """``count`` bytes in words a person reads at a glance: 512 bytes, 3.5 KiB, 512 MiB, 2 GiB."""
    value, unit = float(count), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{int(value)} bytes" if unit == "bytes" else f"{value:.3g} {unit}"


def parse_bytes(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"300k"``, ``"1048576"`` as a byte count (binary units); ValueError otherwise."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r}; write a number of bytes, or one with K, M, G or T (e.g. 512M)")
    return int(float(match[1]) * units[match[2].upper()])


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


def publish_modes(directory: Path) -> None:
    """Give the bundle the modes of an ordinarily created directory and files.

    mkdtemp makes the staging directory 0700, and some writers (onnx's external
    data among them) leave 0600 files: a bundle exported by CI or another user
    would be unreadable to the worker that serves it.
    """
    mask = current_umask()
    for path in [directory, *directory.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def owned_tempdir(parent: os.PathLike | str, name: str) -> Path:
    """A new hidden directory ``.NAME.partial-HOST-PID-XXXXXX`` in ``parent`` for staging ``name``.

    The name records the owning host and process, so that ``remove_stale_tempdirs``
    can tell a staging directory left by a killed run from one still being written.
    """
    return Path(tempfile.mkdtemp(prefix=f".{name}.partial-{_host()}-{os.getpid()}-", dir=parent))


def remove_stale_tempdirs(parent: os.PathLike | str, name: str) -> list[Path]:
    """Delete the ``owned_tempdir`` directories for ``name`` whose process on this host is gone; return them."""
    owned = re.compile(rf"\.{re.escape(name)}\.partial-(?P<host>.+)-(?P<pid>\d+)-[^-]+")
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = owned.fullmatch(entry.name)
        # Another host's process cannot be checked from here (a shared file system): leave it alone.
        if match and match["host"] == _host() and not _alive(int(match["pid"])) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def rename_new(source: os.PathLike | str, target: os.PathLike | str) -> None:
    """Rename ``source`` to ``target``, raising FileExistsError if ``target`` exists, however it got there.

    rename(2) fails onto a non-empty directory or a file when ``source`` is a
    directory, but silently replaces an empty directory; the lexists check covers that.
    """
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "already exists", str(target))
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, "appeared meanwhile", str(target)) from None
        raise


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, OSError):
        return False
    return True
