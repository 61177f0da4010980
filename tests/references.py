"""What eager PyTorch computed at export, read straight from a bundle's files: the runtime tier's anchor.

Every exported bundle stores its self-test: a few pictures and prompts with the eager model's
outputs on them (``self_test/*.npy``), written by the exporter before any ONNX graph ran. Reading them
here with json and NumPy, without clip_onnx's manifest reader or runtime, gives runtime tests an
expectation that does not come from the code under test, even where torch is not installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class EagerReferences:
    images: list[Path]
    texts: list[str]
    visual: np.ndarray  # [images, width], unit rows
    textual: np.ndarray  # [texts, width], unit rows
    logit_scale: float

    def similarity(self) -> np.ndarray:
        """``logit_scale * cos`` of every stored picture with every stored prompt, in float64."""
        return self.logit_scale * (self.visual @ self.textual.T)


def eager_references(bundle: Path) -> EagerReferences:
    manifest = json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))
    spec = manifest["self_test"]

    def unit(tower: str) -> np.ndarray:
        rows = np.load(Path(bundle) / spec["references"][tower]).astype(np.float64)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return EagerReferences(
        images=[Path(bundle) / name for name in spec["images"]],
        texts=list(spec["texts"]),
        visual=unit("visual"),
        textual=unit("textual"),
        logit_scale=float(manifest["logit_scale"]),
    )
