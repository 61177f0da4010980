"""Dynamic INT8 quantization of exported graphs for CPU inference.

Choices made by measurement on a 2-core AVX-512/VNNI machine with
ruclip-vit-base-patch32-384 (see README "Performance"):

- weights QInt8: ONNX Runtime's VNNI kernels run s8s8 MatMulInteger about 3x
  faster than fp32 here, while QUInt8 weights were barely faster than fp32
  (1.06x visual, 1.08x text);
- only MatMul/Gemm are quantized: the patch-embedding Conv stays fp32 to avoid
  the slow ConvInteger kernel, and restricting the op types keeps
  quantize_dynamic away from ops it cannot handle (opset-23 Attention);
- per-tensor weight scales first, per-channel second (``INT8_LADDER``):
  per-channel was about 5% slower here (visual 73.9 against 70.4 ms at batch
  1) but more accurate on small widths (the embedded demo model: zero-shot
  shape agreement with fp32 99.6% against 99.3%), so it is the fallback for a
  tower whose per-tensor cosine misses the gate.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from clip_onnx.errors import ExportError

log = logging.getLogger(__name__)

INT8_OP_TYPES = ("MatMul", "Gemm")


def quantize_int8(source: Path, target: Path, op_types=INT8_OP_TYPES, per_channel: bool = False) -> dict:
    """Write a dynamically quantized copy of ``source`` to ``target``; returns what was done, for the manifest."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # onnxruntime logs an unconditional "consider pre-processing" hint on the root logger.
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)
            try:
                quantize_dynamic(source, target, op_types_to_quantize=list(op_types), weight_type=QuantType.QInt8,
                                 per_channel=per_channel)
            finally:
                root.setLevel(level)
    except Exception as exc:
        raise ExportError(f"INT8 quantization of {source.name} failed: {exc}") from exc
    return {"method": "onnxruntime.quantize_dynamic", "weight_type": "QInt8", "op_types": list(op_types),
            "per_channel": per_channel}


def _per_channel(source: Path, target: Path) -> dict:
    return quantize_int8(source, target, per_channel=True)


#: Converters for ``precision.lower``, fastest first.
INT8_LADDER = (quantize_int8, _per_channel)
