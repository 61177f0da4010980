"""Side-by-side latency benchmarks: eager PyTorch against the exported bundles.

Kept out of the pass/fail test suite; ``clip-onnx bench`` and
``benchmarks/run_cpu.sh`` drive it.
"""
