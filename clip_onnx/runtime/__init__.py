"""Torch-free inference on clip-onnx bundles: NumPy, Pillow and ONNX Runtime only.

Nothing under this package may import torch, onnx or youtokentome; a test
checks that in a fresh interpreter.
"""
from clip_onnx.errors import BackendError, BundleError, ClipOnnxError, InputError
from clip_onnx.runtime.classifier import ClipClassifier, Prediction
from clip_onnx.runtime.model import Classification, ClipModel

__all__ = ["ClipModel", "Classification", "ClipClassifier", "Prediction", "ClipOnnxError", "InputError",
           "BundleError", "BackendError"]
