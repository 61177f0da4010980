"""The on-disk bundle: a directory with ONNX graphs, tokenizer files and ``manifest.json``.

Torch-free: the exporter writes bundles with it and the runtime reads them.
The manifest is written last and the directory appears under its final name
only by an atomic rename, so a crashed export never leaves something that
loads as a bundle.

A bundle may come from someone else: ``read_bundle`` checks the manifest's schema before using any
field, and every file the runtime opens must be listed, regular, hashed and inside the bundle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from clip_onnx.errors import BundleError, ClipOnnxError, InputError
from clip_onnx.files import (
    NotRegularFileError,
    file_kind,
    open_regular,
    owned_tempdir,
    publish_modes,
    remove_stale_tempdirs,
    rename_new,
    sha256_file,
)
from clip_onnx.manifest import TOWERS, FileRecord, GraphSpec, Manifest, ModelKind

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Real manifests are a few kB; this bounds what a hostile one can make us read and parse.
MAX_MANIFEST_BYTES = 16 << 20

__all__ = ["TOWERS", "Bundle", "BundleWriter", "Manifest", "open_bundle", "read_bundle", "sha256_file"]


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    def file(self, name: str) -> Path:
        """Path of a file the manifest lists; refuses names outside the bundle."""
        if name not in self.manifest.files:
            raise BundleError(f"{self.path}: manifest lists no file {name!r}")
        return self.path / name

    @property
    def kind(self) -> ModelKind:
        return self.manifest.kind

    def graph(self, tower: str) -> GraphSpec:
        try:
            return self.manifest.graph(tower)
        except BundleError as exc:
            raise BundleError(f"{self.path}: {exc}") from None

    def graph_path(self, tower: str) -> Path:
        """Where one tower's .onnx lies."""
        return self.file(self.graph(tower).file)

    def graph_files(self, tower: str) -> list[str]:
        """The files of one tower's graph: the .onnx and its external data (``visual.onnx.data``)."""
        self.graph(tower)
        return self.manifest.graph_files(tower)

    def verify(self, names: Iterable[str] | None = None) -> None:
        """Check the sha256 of ``names`` (default: every file) against the manifest."""
        for name in self.manifest.files if names is None else names:
            try:
                digest = sha256_file(self.path / name)
            except OSError as exc:
                raise BundleError(f"cannot read bundle file {str(self.path / name)!r}: {exc.strerror or exc}") from None
            if digest != self.manifest.sha256(name):
                raise BundleError(
                    f"{self.path / name}: sha256 does not match the manifest; the file was modified or corrupted"
                )


def read_bundle(path, *, verify: bool = True) -> Bundle:
    """Open a bundle directory, checking its manifest, its files and (by default) every file's sha256."""
    path = _bundle_dir(path)
    manifest = Manifest.from_dict(_read_manifest(path), str(path / MANIFEST))
    for name, record in manifest.files.items():
        _check_file(path, name, record)
    _refuse_escaping_links(path)
    bundle = Bundle(path=path, manifest=manifest)
    if verify:
        bundle.verify()
    return bundle


def _bundle_dir(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"a bundle path must be a str or os.PathLike, got {type(path).__name__} {path!r:.60}")
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BundleError(
            f"bundle directory {str(path)!r} does not exist; create one with `clip-onnx export`"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise BundleError(
            f"cannot read bundle directory {str(path)!r}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not stat.S_ISDIR(mode):
        raise BundleError(f"bundle path {str(path)!r} is {file_kind(mode)}, not a bundle directory")
    return path


def _read_manifest(path: Path) -> Any:
    manifest_path = path / MANIFEST
    try:
        os.lstat(manifest_path)
    except FileNotFoundError:
        raise BundleError(f"{str(path)!r} is not a clip-onnx bundle: it has no {MANIFEST}") from None
    except OSError:
        pass  # unreadable: _open_in says so
    with _open_in(path, MANIFEST) as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a clip-onnx manifest")
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise BundleError(f"{manifest_path}: unreadable manifest ({type(exc).__name__}: {str(exc)[:200]})") from None


Model = TypeVar("Model")


def open_bundle(
    path, build: Callable[[Bundle], Model], *, verify: bool = True, towers: Iterable[str] | None = None
) -> Model:
    """``build(bundle)`` for the bundle at ``path``, its files' sha256 checked meanwhile.

    With ``towers``, the graphs of other towers are not hashed: ``build`` does not open them.

    Hashing reads every byte of the graphs (0.4-0.6 s for 580 MB here) and
    opening ONNX Runtime sessions reads them again; both release the GIL, so
    they run side by side instead of one after the other.  Nothing is returned
    unless every hash matches.
    """
    bundle = read_bundle(path, verify=False)
    if not verify:
        return build(bundle)
    unused = set() if towers is None else set(bundle.manifest.graphs) - set(towers)
    skipped = {name for tower in unused for name in bundle.graph_files(tower)}
    names = [name for name in bundle.manifest.files if name not in skipped]
    with ThreadPoolExecutor(1, thread_name_prefix="clip-onnx-verify") as pool:
        hashed = pool.submit(bundle.verify, names)
        try:
            model = build(bundle)
        except ClipOnnxError:
            hashed.result()  # a corrupted file explains a failed load better than the backend's message
            raise
        hashed.result()
    return model


def _check_file(root: Path, name: str, record: FileRecord) -> None:
    with _open_in(root, name) as f:
        size = os.fstat(f.fileno()).st_size
    if size != record.size:
        raise BundleError(
            f"{root / name}: size {size} bytes, manifest says {record.size}; the file is truncated or replaced"
        )


def _open_in(root: Path, name: str):
    """``root / name`` open for reading if it is a regular file inside ``root``; BundleError otherwise."""
    file = _check_inside(root, name)
    try:
        return open_regular(file)
    except FileNotFoundError:
        raise BundleError(f"{root}: bundle file {name!r} is missing") from None
    except NotRegularFileError as exc:
        raise BundleError(f"{root}: bundle file {name!r} is {exc.kind}, not a regular file") from None
    except OSError as exc:
        raise BundleError(
            f"{root}: cannot read bundle file {name!r}: {exc.strerror or exc}; check its permissions"
        ) from None


def _check_inside(root: Path, name: str) -> Path:
    """``root / name``, refused if it (through symlinks) leads outside ``root``."""
    file = root / name
    try:
        inside = os.path.realpath(file).startswith(os.path.join(os.path.realpath(root), ""))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{root}: cannot resolve bundle file {name!r}: {exc}") from None
    if not inside:
        raise BundleError(
            f"{root}: bundle file {name!r} leads outside the bundle (to {os.path.realpath(file)!r}); "
            "a bundle must hold its own files, not links to others"
        )
    return file


def _refuse_escaping_links(root: Path) -> None:
    """Refuse a symlink anywhere in the bundle that leads outside it: ONNX Runtime opens a graph's external
    data by the name the graph gives, which need not be a listed file."""
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            if os.path.islink(os.path.join(directory, name)):
                _check_inside(root, os.path.relpath(os.path.join(directory, name), root))


class BundleWriter:
    """Builds a bundle in a hidden sibling directory and renames it into place on commit.

    Use as a context manager: leaving the block without ``commit`` (an error,
    Ctrl-C) deletes the staging directory, so nothing half-written remains.
    Producers write straight into ``writer.dir``; every file found there at
    commit time is hashed into the manifest.
    """

    def __init__(self, out, *, overwrite: bool = False):
        self.out = Path(out).absolute()
        self.overwrite = overwrite
        _check_target(self.out, overwrite)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_tempdirs(self.out.parent, self.out.name):
            log.info("removed %s, left by an export whose process is gone", stale)
        self.dir = owned_tempdir(self.out.parent, self.out.name)
        self._committed = False
        self._hashed: dict[tuple[str, int, int], FileRecord] = {}

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._committed:
            shutil.rmtree(self.dir, ignore_errors=True)

    def add_file(self, name: str, source) -> None:
        """Copy ``source`` into the bundle as ``name`` (a relative path; folders are made as needed)."""
        (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.dir / name)

    def stage(self, manifest: Manifest) -> Bundle:
        """The bundle as ``commit`` would publish it, readable in the staging directory: for checks before commit."""
        full = manifest.with_files(self._records())
        text = json.dumps(full.to_dict(), indent=2, ensure_ascii=False) + "\n"
        (self.dir / MANIFEST).write_text(text, encoding="utf-8")
        return Bundle(path=self.dir, manifest=full)

    def commit(self, manifest: Manifest) -> Bundle:
        """Hash every file written into the staging directory, write the manifest, and move it into place."""
        full = self.stage(manifest).manifest
        publish_modes(self.dir)
        if self.overwrite:
            _check_target(self.out, True)
            _replace_dir(self.dir, self.out)
        else:
            try:
                rename_new(self.dir, self.out)
            except FileExistsError:
                raise BundleError(
                    f"output {str(self.out)!r} appeared while this export ran (another export to the "
                    "same path?) and was left as it is; choose another path or pass --overwrite"
                ) from None
        self._committed = True
        log.info("wrote bundle %s (%d files)", self.out, len(full.files))
        return Bundle(path=self.out, manifest=full)

    def _records(self) -> dict[str, FileRecord]:
        """sha256 and size of every file in the staging directory; unchanged files are not hashed twice."""
        records = {}
        for file in sorted(p for p in self.dir.rglob("*") if p.is_file()):
            name = file.relative_to(self.dir).as_posix()
            if name == MANIFEST:
                continue
            info = file.stat()
            key = (name, info.st_size, info.st_mtime_ns)
            if key not in self._hashed:
                self._hashed[key] = FileRecord(sha256_file(file), info.st_size)
            records[name] = self._hashed[key]
        return records


def _check_target(out: Path, overwrite: bool) -> None:
    if not os.path.lexists(out):
        return
    if not overwrite:
        raise BundleError(f"output {str(out)!r} already exists; choose another path or pass --overwrite")
    # --overwrite replaces a bundle, never a directory of other files the user pointed -o at by mistake.
    if out.is_symlink() or not out.is_dir() or (not (out / MANIFEST).is_file() and any(out.iterdir())):
        raise BundleError(
            f"refusing to replace {str(out)!r}: it is not a clip-onnx bundle (no {MANIFEST}); "
            "--overwrite only replaces bundles. Remove it yourself or choose another path"
        )


def _replace_dir(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    # Move the old bundle aside first so that at every instant `out` is either
    # the complete old bundle or the complete new one.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / "bundle")
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
