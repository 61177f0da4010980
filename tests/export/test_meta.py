"""Every extension point is tested: each family adapter, spec file family, runtime tokenizer and backend."""

from __future__ import annotations

import inspect
import json
from importlib import resources
from pathlib import Path

import pytest

from clip_onnx.export.families import FAMILIES, adapter
from clip_onnx.export.families.base import FamilyAdapter
from clip_onnx.registry import BACKENDS
from clip_onnx.runtime import opener
from clip_onnx.runtime.tokenizers import TOKENIZERS, tokenizer_class

TESTS = Path(__file__).resolve().parents[1]
# Every tier's test modules (tests/runtime, tests/export, tests/serving), by file name.
SOURCES = {p.name: p.read_text(encoding="utf-8") for p in TESTS.glob("*/test_*.py") if p.name != Path(__file__).name}


def _tested_by(*needles: str) -> list[str]:
    return sorted(
        name for name, text in SOURCES.items() if name.startswith("test_") and any(n in text for n in needles)
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_an_adapter_with_tests(family):
    module = adapter(family)
    assert isinstance(module, FamilyAdapter)
    assert "random_weights" in inspect.signature(module.load).parameters
    tested = _tested_by(f"families.{family}", f"families import {family}", f"import {family} as")
    assert tested, f"no test module imports the {family} adapter"


def test_every_spec_file_names_a_family_with_an_adapter():
    families = {
        json.loads(entry.read_text(encoding="utf-8"))["family"]
        for entry in resources.files("clip_onnx.specs").iterdir()
        if entry.name.endswith(".json")
    }
    assert families and families <= set(FAMILIES), sorted(families - set(FAMILIES))


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_every_runtime_tokenizer_has_tests_and_keeps_the_contract(kind):
    tokenizer = tokenizer_class(kind)
    module = tokenizer.__module__
    assert tokenizer.kind == kind and callable(tokenizer.from_spec)
    assert _tested_by(module, f"tokenizers import {module.rsplit('.', 1)[1]}"), f"no test module imports {module}"


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_is_in_the_contract_test(name):
    assert callable(opener(name))
    assert "sorted(BACKENDS)" in SOURCES["test_backends.py"]  # the contract test runs every registered backend
