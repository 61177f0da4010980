"""Inference backends behind one runner contract (``base.Runner``), opened through one registry.

Each backend is one module with an ``open_runner(bundle, tower, options)``
function; ``clip_onnx.registry.BACKENDS`` maps its name to that function,
imported on first use so a worker loads only the backend it runs.
``ClipModel``, ``ClipClassifier``, the benchmark and the CLI's ``--backend``
all read that table: adding a backend (OpenVINO, say) is one module and one line there.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from clip_onnx.bundle import Bundle
from clip_onnx.errors import BackendError, InputError
from clip_onnx.registry import AUTO_ORDER, BACKEND_CHOICES, BACKENDS
from clip_onnx.runtime.backends.base import Runner, RunnerOptions

log = logging.getLogger(__name__)


Opener = Callable[[Bundle, str, RunnerOptions], Runner]


def opener(name: str) -> Opener:
    """The registered opener of backend ``name``; InputError naming the choices for anything else."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    module, function = BACKENDS[name].split(":")
    found: Opener = getattr(importlib.import_module(module), function)
    return found


def open_runner(
    bundle: Bundle,
    tower: str,
    backend: str = "onnxruntime",
    providers: Sequence[Any] | None = None,
    threads: int | None = None,
) -> Runner:
    """A runner for one tower of ``bundle`` on ``backend`` (a name in BACKENDS, or "auto").

    ``auto`` takes TensorRT where it is installed, a GPU is visible and the
    bundle has a plan built for exactly this GPU and TensorRT version, and
    ONNX Runtime otherwise.
    """
    options = RunnerOptions(tuple(providers) if providers else None, threads)
    if backend != "auto":
        return opener(backend)(bundle, tower, options)
    reasons = []
    for name in AUTO_ORDER:
        try:
            runner = opener(name)(bundle, tower, options)
        except BackendError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        if reasons:
            log.info("backend auto: %s for %s (%s)", name, tower, "; ".join(reasons))
        return runner
    raise BackendError(f"backend auto: no backend opens the {tower} graph of {bundle.path}: {'; '.join(reasons)}")


__all__ = ["AUTO_ORDER", "BACKENDS", "BACKEND_CHOICES", "Opener", "RunnerOptions", "open_runner", "opener"]
