"""Dynamic INT8 quantization of exported graphs for CPU inference.

The choices, each made by measurement (figures in benchmarks/NOTES.md,
"export and gates" and "int8 on every CPU"):

- weights QInt8: ONNX Runtime's VNNI kernels run s8s8 MatMulInteger much
  faster than fp32, while QUInt8 weights were barely faster than fp32;
- each weight's scale keeps every aligned pair of its quantized values within
  ``int8_kernels.PAIR_LIMIT`` (``int8_kernels.pair_safe_overrides``): CPUs
  without VNNI add pairs of u8 x s8 products in a saturating int16, and the
  default scale let them saturate (cosine 0.98 on an AVX2 EPYC). The result
  is proven by ``int8_kernels.check_graph`` and recorded in the manifest;
- only MatMul/Gemm are quantized: the patch-embedding Conv stays fp32 to avoid
  the slow ConvInteger kernel, and restricting the op types keeps
  quantize_dynamic away from ops it cannot handle (opset-23 Attention);
- per-tensor weight scales first, per-channel second, u8 weights third
  (``INT8_LADDER``): per-channel is a little slower but more accurate, u8
  weights slower again but exact on every kernel without any bound;
- attention blocks are fused into ONNX Runtime's MultiHeadAttention first
  (``export/attention.py``), which removes the head split/merge Transposes and
  the separate mask, scale and Softmax nodes; the last rung is per-channel
  without the fusion, in case a fused graph ever fails to load.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from clip_onnx.errors import ExportError
from clip_onnx.export.int8_kernels import check_graph, pair_safe_overrides, require_exact

log = logging.getLogger(__name__)

INT8_OP_TYPES = ("MatMul", "Gemm")


def quantize_int8(
    source: Path,
    target: Path,
    op_types=INT8_OP_TYPES,
    per_channel: bool = False,
    fuse: bool = True,
    weight_type: str = "QInt8",
) -> dict:
    """Write a dynamically quantized copy of ``source`` to ``target``; returns what was done, for the manifest.

    A source over protobuf's 2 GiB limit keeps its weights in external data; the
    quantizer then works in external-data form too, and the result is written
    inline again where it fits (``target.data`` only where it does not).
    ``fuse`` first rewrites the attention blocks (see the module docstring).
    Raises ExportError if the result is not proven to give the same sums on every CPU.
    """
    # Next to the source, whose external data the fused graph shares by relative path.
    fused_graph = source.with_name(f".{target.stem}.fused.onnx")
    try:
        fused = _fuse_attention(source, fused_graph) if fuse else 0
        details = _quantize(fused_graph if fused else source, target, op_types, per_channel, weight_type)
    finally:
        fused_graph.unlink(missing_ok=True)
    return {**details, "fused_attention": fused}


def _fuse_attention(source: Path, fused_graph: Path) -> int:
    """Write ``source`` with its attention fused to ``fused_graph``; returns how many blocks were fused,
    0 writing nothing."""
    import onnx

    from clip_onnx.export.attention import fuse_attention

    model = onnx.load(source, load_external_data=False)
    fused = fuse_attention(model, str(source.parent))
    if fused:
        onnx.save_model(model, fused_graph)
    return fused


def _quantize(source: Path, target: Path, op_types, per_channel: bool, weight_type: str) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = has_external_data(source)
    graph = onnx.load(source, load_external_data=False)
    # u8 weights run u8 x u8 kernels, which never add in int16: only s8 weights need bounded scales.
    overrides = pair_safe_overrides(graph, str(source.parent), per_channel) if weight_type == "QInt8" else {}
    del graph
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # onnxruntime logs an unconditional "consider pre-processing" hint on the root logger.
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)
            try:
                quantize_dynamic(
                    source,
                    target,
                    op_types_to_quantize=list(op_types),
                    weight_type=QuantType[weight_type],
                    per_channel=per_channel,
                    use_external_data_format=external,
                    extra_options={"TensorQuantOverrides": overrides} if overrides else None,
                )
            finally:
                root.setLevel(level)
        if external:
            _inline_where_it_fits(target)
    except Exception as exc:
        raise ExportError(f"INT8 quantization to {target.name} failed: {exc}") from exc
    report = check_graph(onnx.load(target, load_external_data=False), str(target.parent))
    require_exact(report, target.name)
    return {
        "method": "onnxruntime.quantize_dynamic",
        "weight_type": weight_type,
        "op_types": list(op_types),
        "per_channel": per_channel,
        "int8_kernels": report.to_record(bounded=len(overrides)),
    }


def has_external_data(path: Path) -> bool:
    """Whether the graph at ``path`` keeps any weight outside the .onnx file."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def _inline_where_it_fits(target: Path) -> None:
    import onnx

    from clip_onnx.export.onnx import save_graph

    data = target.with_name(target.name + ".data")
    model = onnx.load(target)  # reads the external data into memory
    data.unlink(missing_ok=True)
    save_graph(model, target)


def _per_channel(source: Path, target: Path) -> dict:
    return quantize_int8(source, target, per_channel=True)


def _u8_weights(source: Path, target: Path) -> dict:
    return quantize_int8(source, target, per_channel=True, weight_type="QUInt8")


def _per_channel_unfused(source: Path, target: Path) -> dict:
    return quantize_int8(source, target, per_channel=True, fuse=False)


#: Converters for ``precision.lower``, fastest first.
INT8_LADDER = (quantize_int8, _per_channel, _u8_weights, _per_channel_unfused)
