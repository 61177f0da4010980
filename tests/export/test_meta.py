"""Every extension point is tested: each family adapter, spec file family, runtime tokenizer and backend.

Whether a test covers an extension point is read from pytest's own collection of the default run
(a subprocess: the default markers, so a case marked slow or deselected does not count), not from
the text of a test file: a backend or tokenizer must appear as a parameter of the contract tests, a
family adapter must be used by a module with tests in the default run.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest

from clip_onnx.export.families import FAMILIES, adapter
from clip_onnx.export.families.base import FamilyAdapter
from clip_onnx.registry import BACKENDS
from clip_onnx.runtime import opener
from clip_onnx.runtime.tokenizers import TOKENIZERS, tokenizer_class

ROOT = Path(__file__).resolve().parents[2]
# The contract tests, and the modules that test the family adapters.
COLLECTED = [
    "tests/runtime/test_backends.py",
    "tests/runtime/test_tokenizer_contract.py",
    "tests/runtime/test_properties.py",
    *sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "export").glob("test_*.py") if p.name != "test_meta.py"
    ),
]
# Writes, for each test the default run would run, its node id and the family adapters its module uses.
PLUGIN = textwrap.dedent(
    """
    import json, os, types

    def _families(module):
        used = set()
        for value in vars(module).values():
            name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", "")
            if isinstance(name, str) and name.startswith("clip_onnx.export.families."):
                used.add(name.split(".")[3])
        return sorted(used)

    def pytest_collection_finish(session):
        items = [{"id": i.nodeid, "families": _families(i.module)} for i in session.items]
        with open(os.environ["META_COLLECTED"], "w") as f:
            json.dump(items, f)
    """
)


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> list[dict]:
    """The default run's items of COLLECTED, from pytest's collection in a fresh process."""
    tmp = tmp_path_factory.mktemp("meta")
    (tmp / "meta_collect.py").write_text(PLUGIN, encoding="utf-8")
    env = {**os.environ, "META_COLLECTED": str(tmp / "items.json")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp), str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "meta_collect", "-p", "no:cacheprovider"]
        + COLLECTED,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((tmp / "items.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_an_adapter_with_tests_in_the_default_run(family, collected):
    module = adapter(family)
    assert isinstance(module, FamilyAdapter)
    assert "random_weights" in inspect.signature(module.load).parameters
    using = {item["id"].split("::")[0] for item in collected if family in item["families"]}
    assert using, f"no test module in the default run uses the {family} adapter"


def test_every_spec_file_names_a_family_with_an_adapter():
    families = {
        json.loads(entry.read_text(encoding="utf-8"))["family"]
        for entry in resources.files("clip_onnx.specs").iterdir()
        if entry.name.endswith(".json")
    }
    assert families and families <= set(FAMILIES), sorted(families - set(FAMILIES))


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_every_runtime_tokenizer_runs_in_the_contract_and_property_tests(kind, collected):
    tokenizer = tokenizer_class(kind)
    assert tokenizer.kind == kind and callable(tokenizer.from_spec)
    for module in ("tests/runtime/test_tokenizer_contract.py", "tests/runtime/test_properties.py"):
        cases = [i["id"] for i in collected if i["id"].startswith(module) and f"[{kind}" in i["id"]]
        assert cases, f"{module} has no case for the {kind} tokenizer in the default run"


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_runs_in_the_contract_test(name, collected):
    assert callable(opener(name))
    test = "tests/runtime/test_backends.py::test_every_registered_backend_keeps_the_runner_contract"
    cases = {i["id"] for i in collected if i["id"].startswith(test)}
    assert cases >= {f"{test}[{tower}-{name}]" for tower in ("visual", "textual")}, sorted(cases)
