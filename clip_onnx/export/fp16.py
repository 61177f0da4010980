"""Mixed-precision FP16 graphs for GPUs, with fp32 kept where measurement says it must be.

TensorRT >= 10.12 builds strongly typed networks, so FP16 has to live in the
ONNX graph itself rather than in a builder flag.  Inputs and outputs stay
fp32 (``keep_io_types``) so callers never see a dtype change.

Which ops stay fp32 is decided by measurement: ``FP16_LADDER`` lists block
lists from the most to the least aggressive, and the gate in
``precision.lower`` takes the first rung whose outputs meet the fp16
thresholds against the fp32 graph.  The chosen list is recorded in the manifest.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from clip_onnx.errors import ExportError

log = logging.getLogger(__name__)

# Reductions are where fp16 loses accuracy: LayerNorm's mean/variance, Softmax's
# exp-sum, and the decomposed forms some exporters emit (ReduceMean/Pow/Sqrt).
FP16_LADDER: tuple[tuple[str, ...], ...] = (
    (),
    ("LayerNormalization",),
    ("LayerNormalization", "Softmax"),
    ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Div", "Erf"),
)


def fp16_converter(block: Sequence[str]) -> Callable[[Path, Path], dict]:
    """A ``convert(source, target)`` for ``precision.lower`` that keeps ``block`` op types in fp32."""

    def convert(source: Path, target: Path) -> dict:
        import onnx
        from onnxconverter_common import float16

        try:
            model = onnx.load(source)
            # An empty list means the converter's own default: ops it has no fp16 form for.
            # Named explicitly, so the manifest lists what really stayed fp32.
            blocked = sorted(
                set(block) if block else set(float16.DEFAULT_OP_BLOCK_LIST) & {n.op_type for n in model.graph.node}
            )
            with warnings.catch_warnings():
                # The converter warns for every constant it clamps into fp16 range.
                warnings.simplefilter("ignore")
                converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
            _retarget_float_casts(converted)
            onnx.save_model(converted, target)
        except Exception as exc:
            raise ExportError(f"fp16 conversion of {source.name} (fp32 ops {list(block)}) failed: {exc}") from exc
        return {"method": "onnxconverter_common.float16", "keep_io_types": True, "fp32_op_types": blocked}

    return convert


def _retarget_float_casts(model) -> None:
    """Make Cast(to=FLOAT) nodes whose output the converter retyped to FLOAT16 cast to FLOAT16.

    onnxconverter_common retypes every float tensor but leaves a Cast's ``to``
    attribute alone, so a cast to float in the original graph (XLM-R's
    mean pooling casts its attention mask) yields a graph ONNX Runtime refuses:
    "Type (tensor(float16)) of output arg ... does not match expected type".
    """
    from onnx import TensorProto

    retyped = {
        v.name
        for v in list(model.graph.value_info) + list(model.graph.output)
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16
    }
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in retyped:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
