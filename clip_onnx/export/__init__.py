"""The exporter's public API; it may import torch, so import it only where exporting.

Names resolve on first use (PEP 562), so ``import clip_onnx.export`` stays cheap and
the torch-free modules that live here (``engine_gate``) can be imported alone.
The CLI and the benchmark use these names, never the modules behind them.
"""

from __future__ import annotations

from clip_onnx.lazy import lazy_getattr

# public name -> module that defines it
_PUBLIC = {
    "export_bundle": "clip_onnx.export.pipeline",
    "export_model": "clip_onnx.export.pipeline",
    "load_model": "clip_onnx.export.families",
    "run_demo": "clip_onnx.export.demo",
    "build_engines": "clip_onnx.export.tensorrt",
    "ExportOptions": "clip_onnx.export.options",
    "GateOptions": "clip_onnx.export.options",
}

__all__ = sorted(_PUBLIC)

__getattr__ = lazy_getattr(__name__, _PUBLIC)
