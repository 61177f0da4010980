"""Every parity gate's thresholds, in one table: the gate, the CLI help and the docs read them from here.

Dependency-free, so the CLI can build its help text without importing numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Thresholds:
    min_cosine: float
    max_abs: float | None
    min_top1_agreement: float


# stage -> thresholds.  "fp32": eager PyTorch -> ONNX fp32; "fp16"/"int8": ONNX fp32 -> the lowered graph;
# "engine": ONNX graph -> the TensorRT plan built from it.
THRESHOLDS: Mapping[str, Thresholds] = MappingProxyType(
    {
        "fp32": Thresholds(min_cosine=0.99999, max_abs=1e-4, min_top1_agreement=1.0),
        "fp16": Thresholds(min_cosine=0.999, max_abs=None, min_top1_agreement=0.995),
        "int8": Thresholds(min_cosine=0.998, max_abs=None, min_top1_agreement=0.99),
        "engine": Thresholds(min_cosine=0.999, max_abs=None, min_top1_agreement=0.995),
    }
)
# The precisions a graph can have: every stage of the table but the engine gate, which checks plans.
PRECISIONS = tuple(stage for stage in THRESHOLDS if stage != "engine")
# Pictures in the fp16/int8 and engine gates.
GATE_IMAGES = 500


def describe(stage: str) -> str:
    """``stage``'s thresholds in words: "cosine >= 0.998, top-1 agreement >= 99%"."""
    t = THRESHOLDS[stage]
    bound = f", max abs <= {t.max_abs:g}" if t.max_abs is not None else ""
    return f"cosine >= {t.min_cosine:g}{bound}, top-1 agreement >= {t.min_top1_agreement * 100:g}%"


def precision_help() -> str:
    """The help of ``clip-onnx export --precision``."""
    return (
        "int8: dynamic quantization for CPU; fp16: mixed-precision graphs for GPUs/TensorRT. Each tower is "
        f"lowered only if it passes the gate against fp32 on {GATE_IMAGES} images (int8: {describe('int8')}; "
        f"fp16: {describe('fp16')})."
    )


def markdown_table() -> str:
    """The table of gates on docs/precision.md, one row a stage (a test checks the page's copy)."""
    rows = {
        "fp32": "eager PyTorch → ONNX fp32 (every export)",
        "fp16": "ONNX fp32 → fp16 graphs",
        "int8": "ONNX fp32 → int8 graphs",
        "engine": "ONNX graph → TensorRT plan (`build-engine`)",
    }
    lines = ["| gate | min cosine | max abs | min top-1 agreement |", "|---|---|---|---|"]
    for stage, what in rows.items():
        t = THRESHOLDS[stage]
        bound = "—" if t.max_abs is None else f"{t.max_abs:g}"
        lines.append(f"| {what} | {t.min_cosine:g} | {bound} | {t.min_top1_agreement * 100:g}% |")
    return "\n".join(lines)
