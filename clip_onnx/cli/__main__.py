"""`python -m clip_onnx.cli`: the `clip-onnx` command, for a Python whose scripts folder is not on PATH."""

from clip_onnx.cli import main

main()
