"""Inference backends behind one runner contract (``base.Runner``); ``open_runner`` picks one for a tower."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from clip_onnx.bundle import Bundle
from clip_onnx.errors import BackendError, InputError
from clip_onnx.files import sha256_file

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt", "auto")


def open_runner(
    bundle: Bundle,
    tower: str,
    backend: str = "onnxruntime",
    providers: Sequence | None = None,
    threads: int | None = None,
):
    """A runner for one tower of ``bundle``; ``threads``: ONNX Runtime's intra-op threads (None: the default).

    ``auto`` takes TensorRT when it is installed, a GPU is visible and the
    bundle has a plan built for exactly this GPU and TensorRT version, and
    ONNX Runtime otherwise (logged, so the choice is never silent).
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in ("tensorrt", "auto"):
        try:
            return _tensorrt_runner(bundle, tower)
        except BackendError as exc:
            if backend == "tensorrt":
                raise
            log.info("backend auto: using onnxruntime for %s (%s)", tower, exc)
    from clip_onnx.runtime.backends.onnxruntime import OnnxRuntimeRunner, default_session_options

    options = None if threads is None else default_session_options(threads)
    return OnnxRuntimeRunner(bundle.graph_path(tower), providers=providers, session_options=options)


def _tensorrt_runner(bundle: Bundle, tower: str):
    from clip_onnx.engines import ENGINE_DIR, records, select_plan
    from clip_onnx.runtime.backends.tensorrt import TensorRTRunner, current_target

    graph_sha = bundle.manifest.sha256(bundle.graph(tower).file)
    try:
        record = select_plan(records(bundle.path, tower), tower, graph_sha, current_target())
        name = record["plan"]
    except (KeyError, TypeError) as exc:
        raise BackendError(
            f"{bundle.path / ENGINE_DIR}: malformed plan record ({type(exc).__name__}: {exc}); "
            "delete it and rerun `clip-onnx build-engine`"
        ) from None
    # A record names a plan beside it; anything else could make the runtime read another file.
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise BackendError(f"{bundle.path / ENGINE_DIR}: a plan record names {name!r:.80}, not a plan file beside it")
    plan = bundle.path / ENGINE_DIR / name
    if sha256_file(plan) != record["plan_sha256"]:
        raise BackendError(f"{plan}: sha256 does not match its record; rebuild with `clip-onnx build-engine`")
    return TensorRTRunner(plan, record)
