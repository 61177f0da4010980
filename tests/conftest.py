"""Shared fixtures: tiny RuCLIP checkpoints in the native layout, their bundles, and ruclip's own code."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUCLIP_WHEEL = Path(os.environ.get("CLIP_ONNX_RUCLIP_WHEEL", ROOT / ".cache" / "ruclip-0.0.2-py3-none-any.whl"))

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


@pytest.fixture(scope="session")
def ruclip_reference(tmp_path_factory):
    """ruclip 0.0.2's model.py and processor.py, loaded by path from the wheel (the package itself won't install)."""
    if not RUCLIP_WHEEL.is_file():
        pytest.fail(
            f"{RUCLIP_WHEEL} is missing; run scripts/dev-setup.sh (it runs `pip download ruclip==0.0.2 --no-deps`)"
        )
    target = tmp_path_factory.mktemp("ruclip_ref")
    with zipfile.ZipFile(RUCLIP_WHEEL) as wheel:
        for name in ("model.py", "processor.py"):
            (target / name).write_bytes(wheel.read(f"ruclip/{name}"))
    modules = {}
    for name in ("model", "processor"):
        spec = importlib.util.spec_from_file_location(f"ruclip_reference_{name}", target / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
    return modules


@pytest.fixture(scope="session")
def tiny_bpe(tmp_path_factory) -> Path:
    import youtokentome as yttm

    from tests.corpus import training_text

    directory = tmp_path_factory.mktemp("bpe")
    data = directory / "train.txt"
    data.write_text(training_text(seed=1, n_paragraphs=400, n_records=100), encoding="utf-8")
    yttm.BPE.train(data=str(data), model=str(directory / "bpe.model"), vocab_size=500)
    return directory / "bpe.model"


def write_checkpoint(directory: Path, config: dict, bpe: Path, seed: int = 0) -> Path:
    """A RuCLIP checkpoint in the hub's native layout, with random weights."""
    import shutil

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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_bpe) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-ruclip", TINY_CONFIG, tiny_bpe)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    from clip_onnx.export.pipeline import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(str(tiny_checkpoint), out)
    return out


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory) -> Path:
    """The embedded, really trained ruclip-demo model, exported once per session."""
    from clip_onnx.export.pipeline import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "demo"
    export_bundle("ruclip-demo", out)
    return out


@pytest.fixture(scope="session")
def demo_int8_bundle(tmp_path_factory) -> Path:
    """ruclip-demo lowered to int8 behind the gate (both towers pass it), exported once per session."""
    from clip_onnx.export.pipeline import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "demo-int8"
    export_bundle("ruclip-demo", out, precision="int8")
    return out
