"""The staging folder of a run in progress, ``OUT.partial/``: what makes `embed --resume` possible.

A run appends its vectors in parts, one ``part-<start>-<end>.npz`` per range
of source positions, each written atomically; ``state.json`` says which tower
graph (by sha256) and which batching made them, and holds the sha256 of every
part once it is whole.  A resume checks the state and the ids of every part
against the sources before it embeds the rest.

What a crash, a full disk or a careless hand can do to the folder is survived:
a part that is truncated, emptied, altered, missing from the state or preceded
by a gap is deleted with the parts after it, and those items are embedded
again; a ``state.json`` that cannot be read or parsed makes every part
unverifiable, so all of them are.  Batches never cross a part boundary, so the
output is still byte for byte the one an uninterrupted run writes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clip_onnx.batch.inputs import Item
from clip_onnx.batch.pipeline import ItemError
from clip_onnx.errors import InputError
from clip_onnx.files import atomic_path, atomic_write_text, read_regular, sha256_file

log = logging.getLogger(__name__)

# 2: state.json lists the sha256 of every whole part (1 had none; its parts are embedded again).
STATE_VERSION = 2
_PART = re.compile(r"part-(\d{12})-(\d{12})\.npz")
_STATE_KEYS = ("tower", "graph_sha256", "batch_size", "part_size", "parts")
_STATE_LIMIT = 256 << 20  # far above any real state file (about 100 bytes a part)
# What np.load raises on a part that is not the npz it should be.
_LOAD_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


class Part(NamedTuple):
    start: int
    end: int
    path: Path

    def meta(self, rows: int) -> list:
        """The good items' metadata (dicts, or None where an item has none) of the part's ``rows`` rows."""
        try:
            with np.load(self.path, allow_pickle=False) as data:
                if "meta" not in data.files:
                    return [None] * rows
                meta = json.loads(data["meta"].tobytes().decode("utf-8"))
        except (*_LOAD_ERRORS, UnicodeDecodeError) as exc:
            raise InputError(f"the part {self.path} cannot be read ({type(exc).__name__}: {exc})") from None
        return meta

    def load(self, *names: str) -> dict[str, np.ndarray]:
        """The arrays ``names`` (default: all) of the part; an npz reads only the members asked for."""
        try:
            with np.load(self.path, allow_pickle=False) as data:
                return {name: data[name] for name in names or data.files}
        except _LOAD_ERRORS as exc:
            # Parts are checked when a run resumes: this one was damaged while the run was going on.
            raise InputError(
                f"the part {self.path} cannot be read ({type(exc).__name__}: {exc}); rerun with --resume "
                "to embed its items again"
            ) from None


class PartialRun:
    """``OUT.partial/``: locked for the lifetime of the object, removed by ``discard`` once the output is whole."""

    def __init__(self, out: Path, state: Mapping, *, resume: bool):
        self.dir = out.with_name(out.name + ".partial")
        self.state = dict(state, version=STATE_VERSION, parts={})
        self.dir.mkdir(exist_ok=True)
        self._lock = _lock(self.dir / "lock", out)
        try:
            self.parts = self._open(out, resume)
        except BaseException:
            self._lock.close()
            raise
        self._save_state()

    def _open(self, out: Path, resume: bool) -> list[Part]:
        """The whole, verified parts to keep; everything else in the folder that looks like a part is deleted."""
        found = sorted(Part(int(m[1]), int(m[2]), p) for p in self.dir.iterdir() if (m := _PART.fullmatch(p.name)))
        if not resume:
            if found:
                raise InputError(
                    f"{self.dir} holds the parts of a stopped run into {out}; continue it with --resume, "
                    "or delete that folder to start over"
                )
            return []
        saved, damage = _read_state(self.dir / "state.json")
        if saved is None:
            if found:
                log.warning(
                    "%s: %s; its %d parts cannot be checked and are embedded again", self.dir, damage, len(found)
                )
            _delete(found)
            return []
        _check_state(saved, self.state, self.dir)
        kept = _verified_prefix(found, saved["parts"], self.dir)
        _delete(found[len(kept) :])
        # The kept parts stay vouched for, so that a resume stopped in turn keeps them too.
        self.state["parts"] = {part.path.name: saved["parts"][part.path.name] for part in kept}
        return kept

    @property
    def done(self) -> int:
        return self.parts[-1].end if self.parts else 0

    def skip_done(self, items: Iterator[Item]) -> int:
        """Advance ``items`` past the committed parts, checking that every id there matches; returns the count."""
        for part in self.parts:
            data = part.load("positions", "ids", "errors")
            expected = dict(zip(data["positions"].tolist(), data["ids"].tolist(), strict=True))
            expected.update((e["position"], e["id"]) for e in map(json.loads, data["errors"].tolist()))
            for position in range(part.start, part.end):
                item = next(items, None)
                if item is None or item.id != expected.get(position):
                    now = "nothing" if item is None else repr(item.id)
                    raise InputError(
                        f"the stopped run in {self.dir} had {expected.get(position)!r} at position "
                        f"{position}, the SOURCEs now give {now}; resume with the same SOURCEs, or "
                        "delete that folder to start over"
                    )
        return self.done

    def commit(
        self,
        start: int,
        end: int,
        positions: Sequence[int],
        ids: Sequence[str],
        vectors: np.ndarray,
        errors: Sequence[ItemError],
        meta: Sequence[dict | None] = (),
    ) -> None:
        """Write the part of positions ``start..end``: the good items' ids, vectors and ``meta``, the errors."""
        path = self.dir / f"part-{start:012d}-{end:012d}.npz"
        records = [json.dumps(dict(e.record(), position=e.position), ensure_ascii=False) for e in errors]
        arrays = {
            "positions": np.asarray(positions, dtype=np.int64),
            "ids": _strings(ids),
            "vectors": vectors.astype(np.float32, copy=False),
            "errors": _strings(records),
        }
        if any(m is not None for m in meta):
            # One JSON document as UTF-8 bytes: a fixed-width unicode array would pad every row to the longest.
            arrays["meta"] = np.frombuffer(json.dumps(list(meta), ensure_ascii=False).encode("utf-8"), np.uint8)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            # The state vouches for the part before it appears under its name: a crash in between
            # leaves a checksum without a part, which a resume ignores, never a part it cannot check.
            self.state["parts"][path.name] = sha256_file(tmp)
            self._save_state()
        self.parts.append(Part(start, end, path))

    def _save_state(self) -> None:
        atomic_write_text(self.dir / "state.json", json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    def discard(self) -> None:
        self._lock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        self._lock.close()


def _read_state(path: Path) -> tuple[dict | None, str]:
    """(the saved state, "") or (None, what is wrong with it)."""
    try:
        saved = json.loads(read_regular(path, _STATE_LIMIT).decode("utf-8"))
    except FileNotFoundError:
        return None, "state.json is missing"
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        return None, f"state.json is damaged ({type(exc).__name__}: {exc})"
    if not isinstance(saved, dict):
        return None, f"state.json holds a JSON {type(saved).__name__}, not a state"
    if saved.get("version") != STATE_VERSION:
        return None, f"state.json is of version {saved.get('version')!r}, without part checksums"
    missing = [key for key in _STATE_KEYS if key not in saved]
    if missing or not isinstance(saved["parts"], dict):
        return None, f"state.json lacks {', '.join(missing) or 'a mapping of parts'}"
    return saved, ""


def _verified_prefix(found: list[Part], sums: Mapping, where: Path) -> list[Part]:
    """The parts from position 0 on that are contiguous and match the sha256 the state holds for them."""
    kept: list[Part] = []
    for part in found:
        done = kept[-1].end if kept else 0
        if part.start != done:
            problem = f"the items from position {done} to {part.start} are missing"
        elif part.path.name not in sums:
            problem = "state.json does not list it"
        else:
            problem = _damage(part.path, sums[part.path.name])
        if problem:
            log.warning(
                "%s: %s (%s); it and the %d parts after it are embedded again",
                where,
                part.path.name,
                problem,
                len(found) - len(kept) - 1,
            )
            break
        kept.append(part)
    return kept


def _damage(path: Path, expected: object) -> str:
    """Why ``path`` is not the part the state recorded, or "" when it is."""
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        size = info.st_size
        if size == 0:
            return "empty"
        actual = sha256_file(path)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return "" if actual == expected else f"{size} bytes whose sha256 is not the one recorded: truncated or altered"


def _delete(parts: Sequence[Part]) -> None:
    for part in parts:
        part.path.unlink(missing_ok=True)


def _strings(values: Sequence[str]) -> np.ndarray:
    # A fixed-width unicode array loads without pickle, unlike an object array.
    return np.array(list(values), dtype=str) if len(values) else np.zeros(0, dtype="<U1")


def _check_state(saved: Mapping, wanted: Mapping, where: Path) -> None:
    if saved.get("graph_sha256") != wanted["graph_sha256"] or saved.get("tower") != wanted["tower"]:
        raise InputError(
            f"the stopped run in {where} embedded with another {saved.get('tower')} graph (sha256 "
            f"{_short(saved.get('graph_sha256'))}, this bundle's is {_short(wanted['graph_sha256'])}); "
            "vectors of two models must not share one file. Resume with the bundle it started with, "
            "or delete that folder to start over"
        )
    for key, flag in (("batch_size", "--batch-size"), ("part_size", "--part-size"), ("decode", "--decode")):
        # A state written before --decode existed decoded exactly.
        if saved.get(key, "exact" if key == "decode" else None) != wanted.get(key, "exact"):
            raise InputError(
                f"the stopped run in {where} used {flag} {saved.get(key)}; resume with the same "
                f"{flag} so that the output is the one an uninterrupted run would write"
            )


def _short(sha: object) -> str:
    if isinstance(sha, Mapping):
        return ", ".join(f"{name} {str(value)[:12]}" for name, value in sorted(sha.items()))
    return repr(sha)


def _lock(path: Path, out: Path):
    """An exclusive lock on ``path``, released when the process dies, so two runs never write one output."""
    try:  # O_NONBLOCK: a FIFO put in place of the lock file fails here instead of blocking
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise InputError(f"cannot create the lock file {path}: {exc.strerror or exc}; delete it") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{path} is not a regular file; delete it and rerun")
    handle = os.fdopen(fd, "a")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(
            f"another clip-onnx embed is writing {out} right now; wait for it or choose another output"
        ) from None
    return handle
