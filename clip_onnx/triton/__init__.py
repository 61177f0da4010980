"""NVIDIA Triton for bundles: model repositories (`clip-onnx triton`) and a local server (`clip-onnx serve`).

``write_repository`` writes repositories (it needs ``clip-onnx[triton]`` for
Triton's config schema); ``serve_bundle`` runs one on the ``tritonserver`` of
the nvidia-pytriton wheel (``clip-onnx[serve]``); ``steps`` and
``step_model.py`` run inside the server and need only the runtime.  Names
resolve on first use (PEP 562), so the server side never pulls in the writer's
dependencies.
"""

from __future__ import annotations

from clip_onnx.lazy import lazy_getattr

# public name -> module that defines it
_PUBLIC = {
    "write_repository": "clip_onnx.triton.repository",
    "ServingOptions": "clip_onnx.triton.config",
    "TritonError": "clip_onnx.errors",
    "serve_bundle": "clip_onnx.triton.local",
    "ApiSettings": "clip_onnx.triton.local",
    "Ports": "clip_onnx.triton.server",
    "find_server": "clip_onnx.triton.server",
    "BenchPlan": "clip_onnx.triton.bench",
    "serve_bench": "clip_onnx.triton.bench",
    "bench_report": "clip_onnx.triton.bench",
    "machine_facts": "clip_onnx.triton.bench",
}

__all__ = sorted(_PUBLIC)

__getattr__ = lazy_getattr(__name__, _PUBLIC)
