"""ONNX Runtime backend.

``InferenceSession.run`` is thread-safe, so one runner serves every thread of a
worker process.  A requested execution provider that fails to load makes
ONNX Runtime quietly fall back to CPU; we check and refuse that instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clip_onnx.bundle import Bundle
from clip_onnx.errors import BackendError
from clip_onnx.runtime.backends.base import Runner, RunnerOptions, TensorSpec

log = logging.getLogger(__name__)

_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(float16)": np.dtype(np.float16),
}


def default_session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options: all graph optimisations, ``threads`` intra-op threads (0: one per core).

    ``threads`` defaults to the CLIP_ONNX_THREADS environment variable.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is None:
        threads = int(os.environ.get("CLIP_ONNX_THREADS", "0"))
    # 0 lets ONNX Runtime use one thread per physical core.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Threads that spin between the ops of a run save a wake-up per op, but spinners left
    # after a run steal the cores from the next session (a ClipModel holds two) or from the
    # caller: spin during a run, stop when it returns (benchmarks/NOTES.md, "runtime").
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def check_single_distribution() -> None:
    """Refuse onnxruntime and onnxruntime-gpu installed side by side.

    Both install into the same ``onnxruntime`` import folder; whichever was
    installed last overwrote part of the other, which fails later in confusing ways.
    """
    from importlib import metadata

    installed = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    if len(installed) > 1:
        raise BackendError(
            f"both {' and '.join(installed)} are installed; they share one import folder and break "
            "each other. Run `pip uninstall -y onnxruntime onnxruntime-gpu` and install exactly one"
        )


class OnnxRuntimeRunner(Runner):
    """One ONNX graph in an ONNX Runtime ``InferenceSession`` on the requested execution providers."""

    backend = "onnxruntime"

    def __init__(self, path: Path, *, providers: Sequence[Any] | None = None, session_options: Any = None):
        check_single_distribution()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError(
                f"onnxruntime is not importable ({exc}); `pip install onnxruntime` "
                "(or onnxruntime-gpu, never both: they share one import folder)"
            ) from None
        if not hasattr(ort, "InferenceSession"):
            raise BackendError(
                "the onnxruntime package is broken (no InferenceSession): onnxruntime and "
                "onnxruntime-gpu were probably both installed and overwrote each other; "
                "uninstall both, then install exactly one"
            )
        requested = list(providers) if providers else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options or default_session_options(), providers=requested
            )
        except Exception as exc:  # onnxruntime raises its own exception classes per failure
            raise BackendError(f"ONNX Runtime could not load {path}: {exc}") from None
        _require_providers(requested, self.session.get_providers())
        self.device = self.session.get_providers()[0]
        self.inputs = tuple(
            TensorSpec(i.name, _dtype(i.type), tuple(d if isinstance(d, int) else None for d in i.shape))
            for i in self.session.get_inputs()
        )
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.output_shapes = tuple(
            tuple(d if isinstance(d, int) else None for d in (o.shape or ())) for o in self.session.get_outputs()
        )

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(list(self.output_names), dict(feed)), strict=True))

    def close(self) -> None:
        self.session = None


def open_runner(bundle: Bundle, tower: str, options: RunnerOptions) -> OnnxRuntimeRunner:
    """The registry's opener: the tower's graph in an ONNX Runtime session."""
    session_options = None if options.threads is None else default_session_options(options.threads)
    return OnnxRuntimeRunner(bundle.graph_path(tower), providers=options.providers, session_options=session_options)


def _require_providers(requested: list[Any], active: list[str]) -> None:
    names = [p[0] if isinstance(p, (tuple, list)) else p for p in requested]
    missing = [n for n in names if n not in active]
    if missing:
        raise BackendError(
            f"execution provider(s) {missing} did not load (active: {active}); refusing to fall "
            "back to CPU silently. Check that onnxruntime-gpu, CUDA and cuDNN versions match"
        )


def _dtype(onnx_type: str) -> np.dtype:
    try:
        return _DTYPES[onnx_type]
    except KeyError:
        raise BackendError(f"graph input type {onnx_type} is not supported") from None
