"""Write a bundle's Triton models into a model repository (`clip-onnx triton`).

Models are built in a hidden staging directory beside the repository and each
model directory is renamed into place whole, so a failure never leaves a
half-written model that Triton would try to load.  Other models already in
the repository are left alone; ours replace their namesakes only with
``overwrite``.  Graph files are the bundle's own bytes (hardlinked where the
file system and modes allow), so their sha256 still matches the manifest.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from clip_onnx.bundle import Bundle, read_bundle
from clip_onnx.errors import BundleError, TritonError
from clip_onnx.files import sha256_file
from clip_onnx.triton.config import ServingOptions, render
from clip_onnx.triton.models import ModelDir, check_engines, ensemble_models, model_prefix
from clip_onnx.triton.python_layout import python_models

log = logging.getLogger(__name__)

# Triton containers often run as a non-root user: everything must be readable by others.
FILE_MODE = 0o644
DIR_MODE = 0o755
CONFIG = "config.pbtxt"


def write_repository(
    bundle_path,
    out,
    *,
    name: str | None = None,
    options: ServingOptions | None = None,
    engines: bool = False,
    overwrite: bool = False,
    embed_bundle: bool = True,
    progress: Callable[[str], None] = lambda step: None,
) -> list[ModelDir]:
    """Write the Triton models of the bundle at ``bundle_path`` into the repository directory ``out``.

    Returns the models written, the public ones last.  ``engines`` serves the
    TensorRT plans in ``BUNDLE/engines/`` (GPU instances only).  Without
    ``embed_bundle``, python-layout models open the bundle where it is instead
    of carrying its files (a repository for this machine only).
    """
    options = options or ServingOptions()
    check_engines(options, engines)
    prefix = model_prefix(Path(bundle_path), name)
    progress("verify bundle")
    bundle = read_bundle(bundle_path)
    progress("read graphs")
    models = plan_models(bundle, prefix, options, engines, embed_bundle)
    out = Path(out).absolute()
    _check_target(out, models, overwrite)
    progress("write models")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if created:
        out.chmod(DIR_MODE)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        placed: dict[Path, Path] = {}
        for model in models:
            _write_model(staging / model.name, model, bundle, placed)
        progress("publish")
        _publish(staging, out, [m.name for m in models])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %d Triton models for %s into %s", len(models), bundle.path, out)
    return models


def _check_target(out: Path, models: list[ModelDir], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TritonError(f"{out} exists and is not a directory; give -o a model repository directory")
    taken = sorted(m.name for m in models if (out / m.name).exists())
    if taken and not overwrite:
        raise TritonError(
            f"{out} already has the models {taken}; pass --overwrite to replace them, or --name to "
            "write these under another prefix"
        )


def _write_model(directory: Path, model: ModelDir, bundle: Bundle, placed: dict[Path, Path]) -> None:
    """Stage one model; ``placed`` maps bundle files to their first staged copy, which later models link to."""
    # Triton loads only numbered version folders: an ensemble's stays empty.
    (directory / "1").mkdir(parents=True)
    linked = set()
    for relative, source in model.links.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if _link(source, target):
            linked.add(target)
        elif source in placed and _link(placed[source], target):
            linked.add(target)  # a copy made for an earlier model: one copy per repository, not per model
        else:
            shutil.copyfile(source, target)
            _check_copy(source, target, bundle)
            target.chmod(FILE_MODE)
            placed[source] = target
    for relative, source in model.copies.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (directory / CONFIG).write_text(render(model.config), encoding="utf-8")
    for path in [directory, *directory.rglob("*")]:
        # A hardlink shares its mode with the bundle's file, which _link only accepts when already FILE_MODE.
        if path not in linked:
            path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)


def _link(source: Path, target: Path) -> bool:
    """Hardlink ``target`` to ``source`` when that needs no change to the bundle's file; False to copy instead."""
    if stat.S_IMODE(source.stat().st_mode) != FILE_MODE:
        log.info("copying %s: its mode is not %o, and a hardlink would change the bundle's", source, FILE_MODE)
        return False
    try:
        os.link(source, target)
    except OSError as exc:  # another file system, or one without hardlinks
        log.info("copying %s: cannot hardlink it (%s)", source, exc)
        return False
    return True


def _check_copy(source: Path, target: Path, bundle: Bundle) -> None:
    """A copied graph or plan must still hash as its record says: the manifest's for bundle files."""
    try:
        name = source.relative_to(bundle.path).as_posix()
    except ValueError:
        return
    record = bundle.manifest.files.get(name)
    if record is not None and sha256_file(target) != record.sha256:
        raise BundleError(
            f"{target}: the copy of {source} does not match the manifest's sha256; the bundle "
            "changed while it was being written, or the disk is failing"
        )


def _publish(staging: Path, out: Path, names: list[str]) -> None:
    """Rename each staged model directory into ``out``; a replaced one is moved aside first, then deleted."""
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        for name in names:
            target = out / name
            if target.exists():
                os.replace(target, trash / name)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def plan_models(
    bundle: Bundle, name: str, options: ServingOptions, engines: bool = False, embed_bundle: bool = True
) -> list[ModelDir]:
    """Every model directory the bundle becomes in the options' layout, the public models last.

    ``embed_bundle`` (python layout): each model carries the bundle's files
    (hardlinked where possible); without it the models open the bundle where
    it is, by absolute path, as `clip-onnx serve` does.
    """
    check_engines(options, engines)
    if bundle.kind not in ("clip", "classifier"):
        raise BundleError(
            f"{bundle.path} holds a {bundle.kind!r} model; `clip-onnx triton` serves 'clip' and 'classifier' bundles"
        )
    if options.layout == "python":
        return python_models(bundle, name, options, embed_bundle)
    return ensemble_models(bundle, name, options, engines)
