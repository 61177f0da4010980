"""The on-disk bundle: a directory with ONNX graphs, tokenizer files and ``manifest.json``.

Torch-free: the exporter writes bundles with it and the runtime reads them.
The manifest is written last and the directory appears under its final name
only by an atomic rename, so a crashed export never leaves something that
loads as a bundle.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

from clip_onnx.errors import BundleError, ClipOnnxError
from clip_onnx.files import current_umask, sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "clip-onnx-bundle"
FORMAT_VERSION = 1
# The two graphs of a CLIP bundle, in the order every loop over them uses.
TOWERS = ("visual", "textual")

__all__ = ["TOWERS", "Bundle", "BundleWriter", "open_bundle", "read_bundle", "sha256_file"]


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Mapping

    def file(self, name: str) -> Path:
        """Path of a file the manifest lists; refuses names outside the bundle."""
        if name not in self.manifest["files"]:
            raise BundleError(f"{self.path}: manifest lists no file {name!r}")
        return self.path / name

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "clip")

    def graph(self, tower: str) -> Mapping:
        try:
            return self.manifest["graphs"][tower]
        except KeyError:
            raise BundleError(f"{self.path}: bundle has no {tower!r} graph; it has {sorted(self.manifest.get('graphs', {}))}") from None

    def graph_files(self, tower: str) -> list[str]:
        """The files of one tower's graph: the .onnx and its external data (``visual.onnx.data``)."""
        graph = self.graph(tower)["file"]
        return [name for name in self.manifest["files"] if name == graph or name.startswith(graph + ".")]

    def verify(self, names: Iterable[str] | None = None) -> None:
        """Check the sha256 of ``names`` (default: every file) against the manifest."""
        for name in self.manifest["files"] if names is None else names:
            if sha256_file(self.path / name) != self.manifest["files"][name]["sha256"]:
                raise BundleError(f"{self.path / name}: sha256 does not match the manifest; the file was modified "
                                  "or corrupted")


def read_bundle(path, *, verify: bool = True) -> Bundle:
    """Open a bundle directory, checking the format and (by default) every file's sha256."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"bundle directory {str(path)!r} does not exist; create one with `clip-onnx export`")
    if not manifest_path.is_file():
        raise BundleError(f"{str(path)!r} is not a clip-onnx bundle: it has no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: bundle format version {manifest.get('format_version')!r} is not supported "
            f"by this clip-onnx (reads version {FORMAT_VERSION}); re-export or upgrade clip-onnx")
    for name, record in manifest.get("files", {}).items():
        _check_file(path, name, record)
    bundle = Bundle(path=path, manifest=manifest)
    if verify:
        bundle.verify()
    return bundle


Model = TypeVar("Model")


def open_bundle(path, build: Callable[[Bundle], Model], *, verify: bool = True,
                towers: Iterable[str] | None = None) -> Model:
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
    unused = set() if towers is None else set(bundle.manifest.get("graphs", {})) - set(towers)
    skipped = {name for tower in unused for name in bundle.graph_files(tower)}
    names = [name for name in bundle.manifest["files"] if name not in skipped]
    with ThreadPoolExecutor(1, thread_name_prefix="clip-onnx-verify") as pool:
        hashed = pool.submit(bundle.verify, names)
        try:
            model = build(bundle)
        except ClipOnnxError:
            hashed.result()  # a corrupted file explains a failed load better than the backend's message
            raise
        hashed.result()
    return model


def _check_file(root: Path, name: str, record: Mapping) -> None:
    file = root / name
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise BundleError(f"{root}: manifest names a file outside the bundle: {name!r}")
    if not file.is_file():
        raise BundleError(f"{root}: bundle file {name!r} is missing")
    size = file.stat().st_size
    if size != record["size"]:
        raise BundleError(f"{file}: size {size} bytes, manifest says {record['size']}; the file is truncated or replaced")


class BundleWriter:
    """Builds a bundle in a hidden sibling directory and renames it into place on commit.

    Use as a context manager: leaving the block without ``commit`` (an error,
    Ctrl-C) deletes the staging directory, so nothing half-written remains.
    Producers write straight into ``writer.dir``; every file found there at
    commit time is hashed into the manifest.
    """

    def __init__(self, out, *, overwrite: bool = False):
        self.out = Path(out).absolute()
        if self.out.exists() and not overwrite:
            raise BundleError(f"output {str(self.out)!r} already exists; choose another path or pass --overwrite")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        self._committed = False

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self._committed:
            shutil.rmtree(self.dir, ignore_errors=True)

    def add_file(self, name: str, source) -> None:
        shutil.copyfile(source, self.dir / name)

    def commit(self, manifest: Mapping) -> Bundle:
        records = {}
        for file in sorted(p for p in self.dir.rglob("*") if p.is_file()):
            name = file.relative_to(self.dir).as_posix()
            records[name] = {"sha256": sha256_file(file), "size": file.stat().st_size}
        full = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION, files=records)
        (self.dir / MANIFEST).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _publish_modes(self.dir)
        _replace_dir(self.dir, self.out)
        self._committed = True
        log.info("wrote bundle %s (%d files)", self.out, len(records))
        return Bundle(path=self.out, manifest=full)


def _publish_modes(directory: Path) -> None:
    """Give the bundle the modes of an ordinarily created directory and files.

    mkdtemp makes the staging directory 0700, and some writers (onnx's external
    data among them) leave 0600 files: a bundle exported by CI or another user
    would be unreadable to the worker that serves it.
    """
    mask = current_umask()
    for path in [directory, *directory.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


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
