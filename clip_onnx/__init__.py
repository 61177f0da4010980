"""clip-onnx: export CLIP-family models to ONNX bundles and run them without PyTorch.

Importing this package never imports torch; the exporter lives in
``clip_onnx.export`` and is only loaded when asked for.
"""

__version__ = "0.2.0.dev0"
