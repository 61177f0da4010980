"""Side-by-side latency benchmarks: eager PyTorch against the exported bundles.

Kept out of the pass/fail test suite; ``clip-onnx bench`` and
``benchmarks/run_cpu.sh`` drive it.
"""

from __future__ import annotations

from clip_onnx.lazy import lazy_getattr

# public name -> module that defines it (loads torch, so only on first use)
_PUBLIC = {"run_benchmark": "clip_onnx.benchmark.run"}

__all__ = sorted(_PUBLIC)
__getattr__ = lazy_getattr(__name__, _PUBLIC)
