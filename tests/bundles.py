"""The checkpoints and bundles the tests run against: exported once per run, or read from a directory.

The runtime tier (``tests/runtime``) must pass under an install without torch, so
its bundles cannot be exported there. ``scripts/check-runtime-only.sh`` exports
them beforehand with the dev venv::

    .venv/bin/python -m tests.bundles DIR

and runs the tier with ``CLIP_ONNX_TEST_BUNDLES=DIR``. Without that variable the
fixtures in ``tests/conftest.py`` export each bundle the first time a test asks
for it, with the same functions as here, so both runs test the same bundles.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

ENV = "CLIP_ONNX_TEST_BUNDLES"
# name -> what it is; the runtime tier's fixtures are named after these (tiny_bundle, demo_bundle, ...).
BUNDLES = {
    "tiny": "a two-layer RuCLIP with random weights, from a checkpoint in the hub's native layout",
    "demo": "the embedded, really trained ruclip-demo model, fp32",
    "demo-int8": "ruclip-demo lowered to int8 behind the gate (both towers pass it)",
}

# Small enough to export in seconds, shaped like the real ones (vision heads = width/64, context 77).
TINY_CONFIG = {
    "embed_dim": 32,
    "image_resolution": 64,
    "vision_layers": 2,
    "vision_width": 64,
    "vision_patch_size": 16,
    "context_length": 77,
    "vocab_size": 600,
    "transformer_width": 64,
    "transformer_heads": 4,
    "transformer_layers": 2,
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
}


def train_tiny_bpe(directory: Path) -> Path:
    """A youtokentome BPE model trained on the test corpus, the tokenizer of the tiny checkpoint."""
    import youtokentome as yttm

    from tests.corpus import training_text

    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "train.txt"
    data.write_text(training_text(seed=1, n_paragraphs=400, n_records=100), encoding="utf-8")
    yttm.BPE.train(data=str(data), model=str(directory / "bpe.model"), vocab_size=500)
    return directory / "bpe.model"


def write_checkpoint(directory: Path, config: dict, bpe: Path, seed: int = 0) -> Path:
    """A RuCLIP checkpoint in the hub's native layout, with random weights."""
    import torch

    from clip_onnx.export.families.ruclip import build_model

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model(config)
    # Random init leaves logit_scale at 1/0.07; a distinct value proves it is read from the checkpoint.
    with torch.no_grad():
        model.logit_scale.fill_(4.0)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    shutil.copyfile(bpe, directory / "bpe.model")
    return directory


def export(name: str, out: Path, tiny_checkpoint: Path | None = None) -> Path:
    """Export the bundle ``name`` (one of BUNDLES) to ``out``; "tiny" needs the tiny checkpoint."""
    from clip_onnx.export.pipeline import export_bundle

    if name == "tiny":
        if tiny_checkpoint is None:
            raise ValueError("the tiny bundle is exported from the tiny checkpoint; pass tiny_checkpoint")
        export_bundle(str(tiny_checkpoint), out)
    elif name == "demo":
        export_bundle("ruclip-demo", out)
    elif name == "demo-int8":
        export_bundle("ruclip-demo", out, precision="int8")
    else:
        raise ValueError(f"unknown test bundle {name!r}; the tests use {sorted(BUNDLES)}")
    return out


def prebuilt(name: str) -> Path | None:
    """The bundle ``name`` under $CLIP_ONNX_TEST_BUNDLES, or None when the variable is not set."""
    root = os.environ.get(ENV)
    if not root:
        return None
    path = Path(root) / name
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"{ENV}={root} has no bundle {name!r}; export them: python -m tests.bundles {root}")
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.bundles DIR   (exports the test bundles into DIR, which must not exist)")
        return 2
    root = Path(argv[0])
    root.mkdir(parents=True)
    checkpoint = write_checkpoint(root / "work" / "tiny-ruclip", TINY_CONFIG, train_tiny_bpe(root / "work" / "bpe"))
    for name in BUNDLES:
        export(name, root / name, checkpoint)
        print(f"{root / name}: {BUNDLES[name]}")
    shutil.rmtree(root / "work")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
