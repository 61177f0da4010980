"""The skip rule (tests/skip_rule.py), and shared fixtures: tiny RuCLIP checkpoints, the test bundles, ruclip's code."""

from __future__ import annotations

import importlib.util
import os
import sys
import zipfile
from pathlib import Path

import pytest

from tests import skip_rule
from tests.bundles import TINY_CONFIG, export, prebuilt, train_tiny_bpe, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RUCLIP_WHEEL = Path(os.environ.get("CLIP_ONNX_RUCLIP_WHEEL", ROOT / ".cache" / "ruclip-0.0.2-py3-none-any.whl"))


def pytest_configure(config):
    """No silent skip in CI (tests/skip_rule.py): under ``CI`` a skip off the allow-list fails the run."""
    skip_rule.register(config)


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
    return train_tiny_bpe(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_bpe) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-ruclip", TINY_CONFIG, tiny_bpe)


def _bundle(name: str, request, tmp_path_factory) -> Path:
    """The test bundle ``name``: prebuilt for the runtime-only run, else exported once per session."""
    path = prebuilt(name)
    if path is not None:
        return path
    checkpoint = request.getfixturevalue("tiny_checkpoint") if name == "tiny" else None
    return export(name, tmp_path_factory.mktemp("bundles") / name, checkpoint)


@pytest.fixture(scope="session")
def tiny_bundle(request, tmp_path_factory) -> Path:
    return _bundle("tiny", request, tmp_path_factory)


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def demo_bundle(request, tmp_path_factory) -> Path:
    """The embedded, really trained ruclip-demo model."""
    return _bundle("demo", request, tmp_path_factory)


@pytest.fixture(scope="session")
def demo_int8_bundle(request, tmp_path_factory) -> Path:
    """ruclip-demo lowered to int8 behind the gate (both towers pass it)."""
    return _bundle("demo-int8", request, tmp_path_factory)
