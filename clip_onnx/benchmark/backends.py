"""The benchmark's backends: eager torch variants, and every runtime backend of the registry at every precision.

A runtime row is named ``<backend>[-<precision>]`` (``onnxruntime``,
``onnxruntime-int8``, ``tensorrt``): the backend comes from
``clip_onnx.registry.BACKENDS`` and the precision from
``clip_onnx.thresholds.PRECISIONS``, so a new backend or precision shows up
here with no edit. ``BackendUnavailable`` carries why a row cannot run on this
machine (no GPU, no native bf16, no TensorRT); the run notes it and goes on.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Callable, Mapping
from types import MappingProxyType

from clip_onnx.benchmark.feeds import runtime_backend
from clip_onnx.benchmark.report import BF16_FLAGS
from clip_onnx.benchmark.timing import Backend
from clip_onnx.bundle import TOWERS, Bundle
from clip_onnx.errors import BackendError, ClipOnnxError
from clip_onnx.machine import cpu_flags
from clip_onnx.registry import BACKENDS as RUNTIME_BACKENDS
from clip_onnx.runtime import open_runner
from clip_onnx.thresholds import PRECISIONS

# The precision a runtime row runs when its name gives none: TensorRT plans are built from the fp16 graphs.
DEFAULT_PRECISION: Mapping[str, str] = MappingProxyType({"tensorrt": "fp16"})


class BackendUnavailable(ClipOnnxError):
    """A benchmark row that cannot run on this machine; its message says why."""


def runtime_name(backend: str, precision: str) -> str:
    """``onnxruntime`` for fp32 ONNX Runtime, ``onnxruntime-int8``, ``tensorrt`` for its fp16 plans."""
    return backend if precision == DEFAULT_PRECISION.get(backend, "fp32") else f"{backend}-{precision}"


def parse_runtime(name: str) -> tuple[str, str] | None:
    """(runtime backend, precision) of a runtime row's name; None for any other name."""
    backend, _, precision = name.rpartition("-")
    if backend in RUNTIME_BACKENDS and precision in PRECISIONS:
        return backend, precision
    if name in RUNTIME_BACKENDS:
        return name, DEFAULT_PRECISION.get(name, "fp32")
    return None


def torch_backend(name: str, towers: dict) -> Backend:
    """One of TORCH_BACKENDS: fp32 on the CPU, bf16 autocast on the CPU, fp16 on a CUDA GPU."""
    import torch

    if not towers:
        raise BackendUnavailable("eager backends need the model SOURCE beside --bundle")
    if name == "torch":
        # CLIP_ONNX_THREADS sizes ONNX Runtime's pools; eager torch gets as many, so the ratio compares like with
        # like.  On a shared machine one thread each is the steady figure: a busy core stalls a 2-thread OpenMP
        # region at every barrier (benchmarks/NOTES.md, "int8 on CPU").
        threads = int(os.environ.get("CLIP_ONNX_THREADS", "0"))
        torch.set_num_threads(threads or torch.get_num_threads())
        return Backend(name, _calls(towers, torch), prepare=_preparer(towers, torch, "cpu", None))
    if name == "torch-bf16":
        return torch_bf16_backend(towers, cpu_flags())
    if not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA device")
    modules = {t: copy.deepcopy(towers[t].module).to("cuda", torch.float16).eval() for t in TOWERS if t in towers}
    modules.update({t: modules["textual"] for t in towers if t not in TOWERS})  # the padded-text row
    return Backend(
        name,
        {t: _call(modules[t], torch) for t in towers},
        sync=torch.cuda.synchronize,
        gate="fp16",
        prepare=_preparer(towers, torch, "cuda", torch.float16),
    )


def torch_bf16_backend(towers: dict, flags: frozenset[str] | set[str]) -> Backend:
    """Eager torch under ``torch.autocast("cpu", dtype=torch.bfloat16)``: what a CPU user with bf16 would try."""
    import torch

    if not set(flags) & set(BF16_FLAGS):
        raise BackendUnavailable(f"this CPU has no native bf16 ({' or '.join(BF16_FLAGS)} flag in /proc/cpuinfo)")
    return Backend(
        "torch-bf16", _calls(towers, torch, bf16=True), gate=None, prepare=_preparer(towers, torch, "cpu", None)
    )


# The eager rows, made from the model SOURCE.
TORCH_BACKENDS = ("torch", "torch-bf16", "torch-fp16")
# The rows a run makes by default; any <runtime backend>[-<precision>] of the registry is accepted too.
DEFAULT_BACKENDS = (*TORCH_BACKENDS, "onnxruntime", "onnxruntime-int8", "tensorrt")


def is_backend(name: str) -> bool:
    return name in TORCH_BACKENDS or parse_runtime(name) is not None


def bundle_backend(
    label: str, bundle: Bundle, backend: str, gate: str, cut: Callable | None, max_batch: int
) -> Backend:
    """A runtime row: ``bundle`` on runtime ``backend``, fed what ClipModel feeds it, held to the ``gate`` row."""
    if backend == "tensorrt":
        _build_plans(bundle, max_batch)
    try:
        runners = {t: open_runner(bundle, t, backend) for t in TOWERS if t in bundle.manifest.graphs}
    except BackendError as exc:
        raise BackendUnavailable(str(exc)) from None
    return runtime_backend(label, runners, cut, gate)


def _build_plans(bundle: Bundle, max_batch: int) -> None:
    """FP16 plans for this GPU, built (or reused) before the TensorRT row opens them."""
    import torch

    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailable("tensorrt is not installed")
    if not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA device")
    from clip_onnx.engines import Profile
    from clip_onnx.export import build_engines

    build_engines(bundle.path, Profile(1, min(8, max_batch), max_batch))


def _call(module, torch, bf16: bool = False):
    def call(args):
        with torch.inference_mode():
            if not bf16:
                return module(*args)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(*args)

    return call


def _calls(towers: dict, torch, bf16: bool = False) -> dict:
    return {t: _call(towers[t].module, torch, bf16) for t in towers}


def _preparer(towers: dict, torch, device: str, dtype) -> Callable:
    def prepare(tower: str, feed: Mapping):
        args = [torch.from_numpy(feed[n]).to(device) for n in towers[tower].input_names]
        return [a.to(dtype) if dtype is not None and a.is_floating_point() else a for a in args]

    return prepare
