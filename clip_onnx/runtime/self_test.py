"""The bundle's self-test, replayed on the machine that runs it: the proof that travels with the bundle.

A bundle's gates ran where it was exported. The worker that loads it may have
another CPU (int8 kernels that add in int16 or in int32), another execution
provider, GPU or onnxruntime version. The exporter stored a few pictures and
prompts with eager PyTorch's outputs on them (``Manifest.self_test``); here
they go through this machine's whole runtime path (decode, preprocessing,
tokenizer, graphs or plans, provider) and each tower's minimum cosine against
eager is judged by the gates the tower went through, chained: the angles of
the eager -> fp32 gate, the fp16/int8 gate and (for TensorRT plans) the engine
gate add up to the angle the tower may be off by here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from clip_onnx import machine
from clip_onnx.bundle import Bundle
from clip_onnx.errors import BundleError, InputError, SelfTestError
from clip_onnx.manifest import SelfTestSpec
from clip_onnx.parity import min_cosine
from clip_onnx.runtime.backends.base import Runner
from clip_onnx.thresholds import THRESHOLDS

log = logging.getLogger(__name__)

# What ``self_test=`` takes: "auto" runs the test where a lowered graph or another device runs.
SELF_TEST_CHOICES = ("auto", True, False)


class SelfTestable(Protocol):
    """A loaded model the self-test can replay its items through (ClipModel, ClipClassifier)."""

    bundle: Bundle

    def runners(self) -> dict[str, Runner]: ...

    def raw_outputs(self, tower: str, items: Sequence[Any]) -> np.ndarray: ...


@dataclass(frozen=True)
class TowerCheck:
    """One tower's self-test: its minimum cosine against eager PyTorch, and the bound it is held to."""

    tower: str
    items: int
    min_cosine: float
    threshold: float
    judged_by: str
    export_cosine: float | None = None

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold

    def line(self) -> str:
        at_export = f"; at export {self.export_cosine:.6f}" if self.export_cosine is not None else ""
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{self.tower:8s} {self.items:3d} items  min cosine {self.min_cosine:.6f} >= {self.threshold:.6f}? "
            f"{verdict}  ({self.judged_by}{at_export})"
        )


@dataclass(frozen=True)
class SelfTestReport:
    bundle: str
    checks: tuple[TowerCheck, ...]
    machine: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def lines(self) -> list[str]:
        return [f"self-test of {self.bundle} on {machine.summary(self.machine)}"] + [c.line() for c in self.checks]


def self_test_error(report: SelfTestReport) -> SelfTestError:
    """The typed error of a failed self-test: each failing tower's cosine and bound, and this machine."""
    failed = "; ".join(
        f"{c.tower} tower: min cosine {c.min_cosine:.6f} against the eager reference, below {c.threshold:.6f} "
        f"({c.judged_by})"
        for c in report.checks
        if not c.passed
    )
    return SelfTestError(
        f"{report.bundle}: the self-test fails on this machine, {machine.summary(report.machine)}: {failed}. "
        "This machine computes the bundle differently from the one that exported it (CPU kernels, provider, "
        "GPU or library version); do not use its vectors. Run `clip-onnx verify` for the figures, and export "
        "fp32, re-export on this machine, or rebuild plans with `clip-onnx build-engine`",
        report,
    )


def run_self_test(model: SelfTestable, *, at_load: bool = False) -> SelfTestReport:
    """Replay the bundle's self-test through ``model``; ``at_load``: only the items the load-time test uses."""
    bundle = model.bundle
    spec = bundle.manifest.self_test
    if spec is None:
        raise BundleError(f"{bundle.path} carries no self-test (exported before clip-onnx wrote one); re-export it")
    runners = model.runners()
    checks = []
    for tower in (t for t in ("visual", "textual") if t in runners and t in spec.references):
        reference = _reference(bundle, spec, tower)
        count = min(spec.at_load.get(tower, 1), len(reference)) if at_load else len(reference)
        items = _items(bundle, spec, tower)[:count]
        cosine = _min_cosine(reference[:count], model.raw_outputs(tower, items))
        bound, judged_by = tower_threshold(bundle, tower, runners[tower].backend)
        checks.append(TowerCheck(tower, count, cosine, bound, judged_by, spec.export_cosine.get(tower)))
    provider = ", ".join(sorted({runner.device for runner in runners.values()}))
    return SelfTestReport(str(bundle.path), tuple(checks), machine.describe(provider))


def check_on_load(model: SelfTestable, self_test: Any, backend: str) -> None:
    """The load-time self-test ``ClipModel.load(self_test=...)`` asks for; SelfTestError on a miss."""
    if self_test not in SELF_TEST_CHOICES:
        raise InputError(f"self_test must be 'auto', True or False, got {self_test!r}")
    if self_test is False or (self_test == "auto" and not _needs_test(model, backend)):
        return
    if model.bundle.manifest.self_test is None:
        log.warning(
            "%s carries no self-test (exported before clip-onnx wrote one): its %s graphs are not checked "
            "on this machine; re-export it to carry one",
            model.bundle.path,
            "/".join(sorted({g.precision for g in model.bundle.manifest.graphs.values()})),
        )
        return
    report = run_self_test(model, at_load=True)
    for line in report.lines():
        log.debug("%s", line)
    if not report.passed:
        raise self_test_error(report)


def _needs_test(model: SelfTestable, backend: str) -> bool:
    """ "auto": a lowered graph, a TensorRT plan or a provider other than the CPU's runs here."""
    graphs = model.bundle.manifest.graphs
    lowered = any(graphs[tower].precision != "fp32" for tower in model.runners())
    devices = {runner.device for runner in model.runners().values()}
    return lowered or backend == "tensorrt" or devices != {"CPUExecutionProvider"}


def tower_threshold(bundle: Bundle, tower: str, backend: str) -> tuple[float, str]:
    """The cosine a tower must keep against eager here, and the gates it chains, in words."""
    precision = bundle.manifest.graph(tower).precision
    stages = [("fp32 gate", THRESHOLDS["fp32"].min_cosine)]
    if precision != "fp32":
        stages.append((f"{precision} gate", bundle.manifest.lowering_min_cosine(precision)))
    if backend == "tensorrt":
        stages.append(("engine gate", THRESHOLDS["engine"].min_cosine))
    angle = sum(math.acos(min(1.0, c)) for _, c in stages)
    words = " + ".join(f"{name} {c:g}" for name, c in stages)
    return math.cos(angle), f"{words}, angles added" if len(stages) > 1 else words


def _reference(bundle: Bundle, spec: SelfTestSpec, tower: str) -> np.ndarray:
    path = bundle.file(spec.references[tower])
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable self-test reference ({exc}); re-export the bundle") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise BundleError(f"{path}: a self-test reference is a finite float [items, width] array, got {array.dtype}")
    expected = len(spec.images) if tower == "visual" else len(spec.texts)
    if len(array) != expected:
        raise BundleError(f"{path}: {len(array)} reference rows for {expected} self-test {tower} items")
    return array.astype(np.float32, copy=False)


def _items(bundle: Bundle, spec: SelfTestSpec, tower: str) -> list[Any]:
    return [bundle.file(name) for name in spec.images] if tower == "visual" else list(spec.texts)


def _min_cosine(reference: np.ndarray, got: np.ndarray) -> float:
    if reference.shape != got.shape:
        raise BundleError(f"self-test outputs have shape {list(got.shape)}, the references {list(reference.shape)}")
    return min_cosine([reference], [got])  # the gates' comparator; a zero row gives NaN, which never passes
