"""Torch-free inference on clip-onnx bundles: NumPy, Pillow and ONNX Runtime only.

Nothing under this package may import torch, onnx or youtokentome; a test
checks that in a fresh interpreter.
"""

from clip_onnx.errors import BackendError, BundleError, ClipOnnxError, InputError, SelfTestError
from clip_onnx.runtime.backends import RunnerOptions, open_runner, opener
from clip_onnx.runtime.backends.base import Runner
from clip_onnx.runtime.classifier import ClipClassifier, Prediction
from clip_onnx.runtime.model import Classification, ClipModel
from clip_onnx.runtime.preprocess import ImagePreprocessor, PreprocessSpec
from clip_onnx.runtime.self_test import SelfTestReport, run_self_test
from clip_onnx.runtime.tokenizers import load_tokenizer
from clip_onnx.runtime.tokenizers.base import Tokenizer, cut_padding

# The models first; then the parts they are built from, for tools that time or serve one part alone.
__all__ = [
    "ClipModel",
    "Classification",
    "ClipClassifier",
    "Prediction",
    "ClipOnnxError",
    "InputError",
    "BundleError",
    "BackendError",
    "SelfTestError",
    "run_self_test",
    "SelfTestReport",
    "open_runner",
    "opener",
    "RunnerOptions",
    "Runner",
    "ImagePreprocessor",
    "PreprocessSpec",
    "load_tokenizer",
    "Tokenizer",
    "cut_padding",
]
