"""NVIDIA Triton model repositories from bundles: `clip-onnx triton BUNDLE -o REPO`.

``write_repository`` writes them (it needs ``clip-onnx[triton]`` for Triton's
config schema); ``steps`` and ``step_model.py`` run inside the server and need
only the runtime.  Names resolve on first use (PEP 562), so the server side
never pulls in the writer's dependencies.
"""

from __future__ import annotations

from clip_onnx.lazy import lazy_getattr

# public name -> module that defines it
_PUBLIC = {"write_repository": "clip_onnx.triton.repository", "ServingOptions": "clip_onnx.triton.config"}

__all__ = sorted(_PUBLIC)

__getattr__ = lazy_getattr(__name__, _PUBLIC)
