"""No silent skip in CI: a skipped test fails the run unless its reason is on one short allow-list.

A reference library that failed to install would otherwise turn its parity tests into skips and leave
the run green. Under ``CI`` (``.ci/run`` sets it; ``scripts/check-runtime-only.sh`` always does) every skip,
at collection or at run time, must give a reason that starts with one of ``ALLOWED``: what this machine
cannot have, never what an install forgot. Every run prints the skips it saw, CI or not.

A skip on the list says ``f"{NO_GPU}: what it needed"``. Tests that belong to another tier or another
run are deselected by markers (``setup.cfg``), never skipped.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

NO_GPU = "no GPU"
NO_TENSORRT = "no TensorRT runtime"
# The one allow-list: hardware CI machines do not have, and NVIDIA's runtime, which needs that hardware.
ALLOWED = (NO_GPU, NO_TENSORRT)
CI_ENV = "CI"
PLUGIN = "clip-onnx-skip-rule"


def allowed(reason: str) -> bool:
    """Whether a skip's reason is on the allow-list: exactly one of ALLOWED, or one of them, a colon and detail."""
    return any(reason == entry or reason.startswith(f"{entry}:") for entry in ALLOWED)


def tensorrt_missing() -> str | None:
    """Why TensorRT plans cannot run on this machine, as an allowed skip reason; None where they can."""
    missing = [name for name in ("tensorrt", "cupy") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{NO_TENSORRT}: {' and '.join(missing)} not installed (pip install 'clip-onnx[tensorrt]')"
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cupy raises CUDARuntimeError without a driver or device
        return f"{NO_GPU}: {type(exc).__name__}: {exc}"
    return None if count else f"{NO_GPU}: no CUDA device visible"


def strict() -> bool:
    """Whether this run enforces the rule: ``CI`` is set to anything but empty, 0 or false."""
    return os.environ.get(CI_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _reason(report) -> str:
    """A skip report's reason, without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


class SkipRule:
    """Records every skip of the session; under CI turns a skip off the allow-list into a failed run."""

    def __init__(self, enforce: bool) -> None:
        self.enforce = enforce
        self.skips: list[tuple[str, str]] = []

    def _record(self, report) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.append((report.nodeid or str(report.fspath), _reason(report)))

    def pytest_collectreport(self, report) -> None:  # importorskip and module-level skips
        self._record(report)

    def pytest_runtest_logreport(self, report) -> None:
        self._record(report)

    def refused(self) -> list[tuple[str, str]]:
        return [(node, reason) for node, reason in self.skips if not allowed(reason)]

    def pytest_sessionfinish(self, session) -> None:
        # A run whose every test skipped collected none (exit 5): still a failed CI run.
        passing = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if self.enforce and self.refused() and session.exitstatus in passing:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.skips and not self.enforce:
            return
        terminalreporter.section(f"skips ({len(self.skips)}; allowed under CI: {', '.join(ALLOWED)})")
        for node, reason in self.skips:
            terminalreporter.line(f"{'allowed' if allowed(reason) else 'NOT ALLOWED'}  {node}: {reason}")
        refused = self.refused()
        if refused and self.enforce:
            terminalreporter.line(
                f"error: {len(refused)} skipped for a reason off the allow-list, which fails a CI run; "
                "install what they need (scripts/dev-setup.sh) or, if the machine cannot have it, skip with "
                "tests.skip_rule.NO_GPU or NO_TENSORRT",
                red=True,
            )
        elif refused:
            terminalreporter.line(f"{len(refused)} of these would fail a CI run (CI=1 enforces the allow-list)")
        elif not self.skips:
            terminalreporter.line("no test skipped")


def register(config) -> None:
    """Install the rule for this session, once (tests/conftest.py calls this from pytest_configure)."""
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.register(SkipRule(strict()), PLUGIN)


def pytest_configure(config) -> None:
    """So that ``pytest -p tests.skip_rule`` installs the rule where tests/conftest.py is not loaded."""
    register(config)
