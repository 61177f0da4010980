"""TensorRT backend: runs a bundle's plans with the standard ``tensorrt`` runtime and cupy for device memory.

Torch-free.  Thread safety: each thread gets its own execution context,
CUDA stream and device buffers (``threading.local``), created on first use and
reused afterwards, so threads never share mutable TensorRT state and need no
lock.  Buffers are allocated once, at the profile's maximum shapes; batches
larger than the profile's max batch are run in chunks, and nothing is padded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from clip_onnx.bundle import Bundle
from clip_onnx.engines import Target, chunks
from clip_onnx.errors import BackendError, InputError
from clip_onnx.files import sha256_file
from clip_onnx.runtime.backends.base import Runner, RunnerOptions, TensorSpec

log = logging.getLogger(__name__)


def import_runtime():
    try:
        import cupy
        import tensorrt
    except ImportError as exc:
        raise BackendError(
            f"the TensorRT backend needs tensorrt and cupy ({exc}); pip install 'clip-onnx[tensorrt]'"
        ) from None
    return tensorrt, cupy


def current_target() -> Target:
    trt, cp = import_runtime()
    try:
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
    except Exception as exc:  # cupy raises CUDARuntimeError without a GPU or driver
        raise BackendError(f"no usable CUDA device for TensorRT: {exc}") from None
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return Target("tensorrt", trt.__version__, name, f"{props['major']}.{props['minor']}")


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, plan_path: Path, record: Mapping):
        trt, self._cp = import_runtime()
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self._engine is None:
            raise BackendError(f"TensorRT could not deserialize {plan_path}; rebuild it with `clip-onnx build-engine`")
        self.max_batch = int(record["profile"]["max_batch"])
        self.device = f"TensorRT {trt.__version__} on {record.get('target', {}).get('gpu', 'a GPU')}"
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = tuple(
            TensorSpec(
                n,
                np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))),
                tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(n)),
            )
            for n in names
            if is_input[n]
        )
        self.output_names = tuple(n for n in names if not is_input[n])
        self.output_shapes = tuple(
            tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(n)) for n in self.output_names
        )
        self._local = threading.local()

    def _state(self):
        state = getattr(self._local, "state", None)
        if state is None:
            cp = self._cp
            context = self._engine.create_execution_context()
            # Size every buffer for the largest shapes the profile admits.
            for spec in self.inputs:
                context.set_input_shape(spec.name, tuple(self._engine.get_tensor_profile_shape(spec.name, 0)[2]))
            buffers = {}
            for name in [s.name for s in self.inputs] + list(self.output_names):
                shape = tuple(context.get_tensor_shape(name))
                dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
                buffers[name] = cp.empty(int(np.prod(shape)), dtype=dtype)
            state = self._local.state = (context, cp.cuda.Stream(non_blocking=True), buffers)
        return state

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        total = len(next(iter(feed.values())))
        parts = [self._run_chunk({k: v[sl] for k, v in feed.items()}) for sl in chunks(total, self.max_batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _run_chunk(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        context, stream, buffers = self._state()
        for name, array in feed.items():
            if not context.set_input_shape(name, array.shape):
                raise InputError(f"input {name!r} shape {list(array.shape)} is outside the plan's profile")
            view = buffers[name][: array.size]
            view.set(np.ascontiguousarray(array).ravel(), stream=stream)
            context.set_tensor_address(name, view.data.ptr)
        shapes = {name: tuple(context.get_tensor_shape(name)) for name in self.output_names}
        for name in self.output_names:
            context.set_tensor_address(name, buffers[name].data.ptr)
        if not context.execute_async_v3(stream.ptr):
            raise BackendError("TensorRT execution failed")
        out = {
            name: buffers[name][: int(np.prod(shape))].get(stream=stream).reshape(shape)
            for name, shape in shapes.items()
        }
        stream.synchronize()
        return out

    def close(self) -> None:
        self._local = threading.local()
        self._engine = None


def open_runner(bundle: Bundle, tower: str, options: RunnerOptions) -> TensorRTRunner:
    """The registry's opener: the plan `clip-onnx build-engine` made for this tower's graph on this GPU.

    BackendError says why there is none (no TensorRT or GPU, no plan, a plan for another GPU or
    TensorRT version, a tampered plan); ``options`` are ONNX Runtime's and do not apply.
    """
    from clip_onnx.engines import ENGINE_DIR, records, select_plan

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
