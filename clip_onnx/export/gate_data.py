"""What the fp16/int8 gates run on, and against which thresholds: the user's own data, or the built-in inputs.

By default the gates feed synthetic photos (or the model's own domain pictures,
where its family provides them) and the model's sample prompts in every
GATE_TEMPLATES shape, judged by ``clip_onnx.thresholds``.  A user with a domain
of their own (product photos, scans, their label set) passes a folder of
pictures and a file of prompts, and may move the thresholds for one export.
Everything is read and checked before the export starts, so a bad folder fails
in seconds, not after minutes of tracing.  ``GatePlan.record`` is what the
manifest keeps, so a reader of the bundle knows what "passed" meant.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from clip_onnx.errors import ExportError, InputError
from clip_onnx.export import validate
from clip_onnx.export.families.base import ExportableModel
from clip_onnx.export.options import GateOptions
from clip_onnx.files import sha256_bytes, sha256_file
from clip_onnx.gate_feeds import gate_task
from clip_onnx.parity import GATE_BATCH, GATE_TEMPLATES, THRESHOLDS, Logits, Thresholds, ZeroShot
from clip_onnx.runtime.preprocess import ImagePreprocessor

log = logging.getLogger(__name__)

# One full gate batch: fewer pictures make top-1 agreement too coarse to mean anything (one image = 6 points).
MIN_GATE_IMAGES = GATE_BATCH
# Zero-shot needs at least two prompts to choose between.
MIN_GATE_TEXTS = 2


@dataclass(frozen=True)
class GatePlan:
    """The gate's feeds (tower -> batches), its top-1 task, thresholds, and the manifest's record of them."""

    feeds: Mapping[str, Sequence[Mapping[str, np.ndarray]]] = field(repr=False)
    task: ZeroShot | Logits
    thresholds: Thresholds
    record: dict


def plan_gate(model: ExportableModel, precision: str, gate: GateOptions | None = None) -> GatePlan:
    """Read and check the gate's inputs for lowering ``model`` to ``precision`` (``GateOptions`` says which).

    A folder of the user's pictures is walked recursively; unreadable files are
    skipped with a warning and counted.
    """
    gate = gate or GateOptions()
    images, texts = gate.images, gate.texts
    thresholds, overridden = _thresholds(precision, gate.min_cosine, gate.min_agreement)
    if isinstance(images, (str, os.PathLike)):
        visual, image_record = _user_images(Path(images), ImagePreprocessor(model.preprocess))
    else:
        visual = validate.feed_maker(model).images(images)
        image_record = {"source": "model domain" if model.gate_images else "synthetic", "count": images}
    feeds = {"visual": visual}
    task: ZeroShot | Logits = gate_task(model.kind)
    text_record = None
    if model.textual is None:
        if texts is not None:
            raise ExportError(
                f"--gate-texts {str(texts)!r}: {model.name} is a classifier with no text tower; "
                "leave --gate-texts out (its gate compares the argmax class on the gate images)"
            )
    elif texts is not None:
        feeds["textual"], text_record = _user_texts(Path(texts), model)
        task = ZeroShot()  # one zero-shot task over the user's prompts, no template blocks
    else:
        feeds["textual"] = validate.feed_maker(model).prompts()
        text_record = {
            "source": "model",
            "count": sum(len(f["input_ids"]) for f in feeds["textual"]),
            "templates": len(GATE_TEMPLATES),
        }
    record = {"images": image_record, "thresholds": asdict(thresholds), "overridden": overridden}
    if text_record is not None:
        record["texts"] = text_record
    return GatePlan(feeds, task, thresholds, record)


def _thresholds(precision: str, min_cosine: float | None, min_agreement: float | None) -> tuple[Thresholds, list]:
    overrides = {}
    if min_cosine is not None:  # GateOptions checked both ranges
        overrides["min_cosine"] = float(min_cosine)
    if min_agreement is not None:
        overrides["min_top1_agreement"] = float(min_agreement)
    return replace(THRESHOLDS[precision], **overrides), sorted(overrides)


def _user_images(folder: Path, preprocess: ImagePreprocessor) -> tuple[list[dict], dict]:
    """Every readable picture under ``folder``, preprocessed, in GATE_BATCH batches; and their record."""
    if not folder.is_dir():
        raise ExportError(f"--gate-images {str(folder)!r} is not a folder; give a folder of your pictures")
    # Hidden files and folders (.DS_Store, .git) are never pictures.
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    pixels, used, skipped = [], [], 0
    for path in files:
        try:
            pixels.append(preprocess([path])[0])
        except InputError as exc:
            skipped += 1
            log.warning("gate images: skipping %s, not a readable picture (%s)", path, exc)
            continue
        used.append(path)
    if len(used) < MIN_GATE_IMAGES:
        raise ExportError(
            f"--gate-images {str(folder)!r} has {len(used)} readable pictures ({skipped} unreadable "
            f"skipped); the gate needs at least {MIN_GATE_IMAGES}: add pictures of your domain"
        )
    log.info("gate images: %d pictures from %s (%d unreadable skipped)", len(used), folder, skipped)
    listing = "".join(f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n" for p in used)
    batches = [{"pixel_values": np.stack(pixels[s : s + GATE_BATCH])} for s in range(0, len(pixels), GATE_BATCH)]
    return batches, {
        "source": "user",
        "count": len(used),
        "skipped": skipped,
        "files_sha256": sha256_bytes(listing.encode()),
    }


def _user_texts(file: Path, model: ExportableModel) -> tuple[list[dict], dict]:
    """The prompts in ``file`` (one a line, blank lines ignored), tokenized in GATE_BATCH batches; and their record."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"--gate-texts {str(file)!r} cannot be read as UTF-8 text: {exc}") from None
    texts = [line.strip() for line in lines if line.strip()]
    if len(texts) < MIN_GATE_TEXTS:
        raise ExportError(
            f"--gate-texts {str(file)!r} has {len(texts)} prompts; the zero-shot gate needs at least "
            f"{MIN_GATE_TEXTS}, one a line"
        )
    try:
        tokens = model.tokenize(texts)
    except InputError as exc:
        raise ExportError(f"--gate-texts {str(file)!r}: {exc}") from None
    batches = [{k: v[s : s + GATE_BATCH] for k, v in tokens.items()} for s in range(0, len(texts), GATE_BATCH)]
    return batches, {"source": "user", "count": len(texts), "sha256": sha256_file(file)}
