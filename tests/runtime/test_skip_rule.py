"""The skip rule (tests/skip_rule.py), run on small test files in a real pytest subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.skip_rule import ALLOWED, NO_GPU, NO_TENSORRT, allowed

ROOT = Path(__file__).resolve().parents[2]

TESTS = textwrap.dedent(
    """
    import pytest

    def test_passes():
        assert 1 + 1 == 2

    def test_needs_a_gpu():
        pytest.skip("no GPU: needs a CUDA device")

    @pytest.mark.skipif(True, reason="no TensorRT runtime: tensorrt is not importable")
    def test_needs_tensorrt():
        pass
    """
)


def pytest_run(tmp_path: Path, ci: str | None, **files: str) -> subprocess.CompletedProcess:
    """pytest on ``files`` (name -> source) in ``tmp_path``, with the rule as its one plugin and CI as given."""
    for name, source in files.items():
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the installed plugins (hypothesis, ray...) only slow it down
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-p", "tests.skip_rule", "-p", "no:cacheprovider", "-q", "."]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)


def test_the_allow_list_is_short_and_matches_by_prefix():
    assert ALLOWED == (NO_GPU, NO_TENSORRT)
    assert allowed("no GPU") and allowed("no GPU: needs cupy") and allowed("no TensorRT runtime: no module")
    for reason in ("could not import 'open_clip': No module named 'open_clip'", "no GPUs here", "", "GPU"):
        assert not allowed(reason), reason


def test_skips_on_the_allow_list_pass_under_ci_and_are_listed(tmp_path):
    done = pytest_run(tmp_path, "1", test_sample=TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 2 skipped" in done.stdout
    assert "allowed  test_sample.py::test_needs_a_gpu: no GPU: needs a CUDA device" in done.stdout
    assert "allowed  test_sample.py::test_needs_tensorrt: no TensorRT runtime" in done.stdout


@pytest.mark.parametrize(
    "skip",
    [
        'pytest.importorskip("no_such_reference_library")',  # at collection: the whole module
        'pytest.skip("the reference library did not install", allow_module_level=True)',
        "def test_skipped():\n    pytest.skip('server venv missing')",
    ],
    ids=["importorskip", "module-level", "in-test"],
)
def test_a_skip_off_the_list_fails_a_ci_run_and_only_a_ci_run(tmp_path, skip):
    files = {"test_sample": TESTS, "test_reference": f"import pytest\n\n{skip}\n"}
    done = pytest_run(tmp_path, "true", **files)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "NOT ALLOWED  test_reference.py" in done.stdout and "1 skipped for a reason off" in done.stdout
    for ci in (None, "0"):
        local = pytest_run(tmp_path, ci, **files)
        assert local.returncode == 0, (ci, local.stdout + local.stderr)
        assert "1 of these would fail a CI run" in local.stdout


def test_a_ci_run_whose_every_test_skipped_off_the_list_fails(tmp_path):
    done = pytest_run(tmp_path, "1", test_reference='import pytest\n\npytest.importorskip("no_such_library")\n')
    assert done.returncode == 1 and "NOT ALLOWED" in done.stdout, done.stdout


def test_a_failing_run_keeps_its_own_exit_status(tmp_path):
    source = TESTS + "\ndef test_fails():\n    assert False\n\ndef test_odd():\n    pytest.skip('odd')\n"
    done = pytest_run(tmp_path, "1", test_sample=source)
    assert done.returncode == 1 and "1 failed" in done.stdout and "NOT ALLOWED" in done.stdout
