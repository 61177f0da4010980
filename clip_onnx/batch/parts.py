"""The staging folder of a run in progress, ``OUT.partial/``: what makes `embed --resume` possible.

A run appends its vectors in parts, one ``part-<start>-<end>.npz`` per range
of source positions, each written atomically; ``state.json`` says which tower
graph (by sha256) and which batching made them.  A killed run therefore leaves
only whole parts, and a resume checks the state and the ids of every part
against the sources before it embeds the rest.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clip_onnx.batch.pipeline import ItemError
from clip_onnx.batch.sources import Item
from clip_onnx.errors import InputError
from clip_onnx.files import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

STATE_VERSION = 1
_PART = re.compile(r"part-(\d{12})-(\d{12})\.npz")


class Part(NamedTuple):
    start: int
    end: int
    path: Path

    def load(self, *names: str) -> dict[str, np.ndarray]:
        """The arrays ``names`` (default: all) of the part; an npz reads only the members asked for."""
        with np.load(self.path, allow_pickle=False) as data:
            return {name: data[name] for name in names or data.files}


class PartialRun:
    """``OUT.partial/``: locked for the lifetime of the object, removed by ``discard`` once the output is whole."""

    def __init__(self, out: Path, state: Mapping, *, resume: bool):
        self.dir = out.with_name(out.name + ".partial")
        self.state = dict(state, version=STATE_VERSION)
        self.dir.mkdir(exist_ok=True)
        self._lock = _lock(self.dir / "lock", out)
        if not resume and any(_PART.fullmatch(p.name) for p in self.dir.iterdir()):
            self._lock.close()
            raise InputError(
                f"{self.dir} holds the parts of a stopped run into {out}; continue it with --resume, "
                "or delete that folder to start over"
            )
        if not resume:
            (self.dir / "state.json").unlink(missing_ok=True)  # a run that stopped before its first part
        state_file = self.dir / "state.json"
        if state_file.is_file():
            _check_state(json.loads(state_file.read_text(encoding="utf-8")), self.state, self.dir)
        else:
            atomic_write_text(state_file, json.dumps(self.state, indent=2, sort_keys=True) + "\n")
        self.parts = self._committed()

    def _committed(self) -> list[Part]:
        parts = sorted(Part(int(m[1]), int(m[2]), p) for p in self.dir.iterdir() if (m := _PART.fullmatch(p.name)))
        done = 0
        for part in parts:
            if part.start != done:
                raise InputError(
                    f"{self.dir} is missing the items from position {done} to {part.start}; "
                    "delete the folder to start over"
                )
            done = part.end
        return parts

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
    ) -> None:
        path = self.dir / f"part-{start:012d}-{end:012d}.npz"
        records = [json.dumps(dict(e.record(), position=e.position), ensure_ascii=False) for e in errors]
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                positions=np.asarray(positions, dtype=np.int64),
                ids=_strings(ids),
                vectors=vectors.astype(np.float32, copy=False),
                errors=_strings(records),
            )
        self.parts.append(Part(start, end, path))

    def discard(self) -> None:
        self._lock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        self._lock.close()


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
    for key, flag in (("batch_size", "--batch-size"), ("part_size", "--part-size")):
        if saved.get(key) != wanted[key]:
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
    handle = open(path, "a")
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
