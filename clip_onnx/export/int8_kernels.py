"""int8 MatMul weights that give the same numbers on every x86 kernel ONNX Runtime picks, and the proof of it.

ONNX Runtime (MLAS) multiplies the dynamically quantized u8 activations by s8
weights with one of two kinds of kernel:

- without VNNI (AVX2, AVX-512BW): ``vpmaddubsw`` multiplies u8 by s8 and adds
  each aligned pair of products along K (k = 2i and 2i + 1) into an int16 that
  saturates at -32768 / 32767, before the pairs are widened and summed in int32;
- with AVX-512 VNNI, AVX-VNNI or AMX: the products are summed in int32 directly.

An activation is at most 255, so a pair of weights can overflow only when both
have the same sign and ``255 * (|w0| + |w1|) > 32767``: when the pair's
same-sign magnitude exceeds ``PAIR_LIMIT`` (128).  If no pair of a quantized
weight does, both kinds of kernel compute the same exact integer sums, and a
gate passed on any of these machines holds on all of them.

``pair_safe_overrides`` picks each MatMul weight's scale: ONNX Runtime's own
(``max |w| / 127``) where its rounded weights already keep every pair within
the limit, else the pair-bounded scale ``P / 127``, with P the largest
same-sign pair sum of the float weights (then ``|q0| + |q1| <= 127 + 1``).
``check_graph`` proves the result from the quantized graph alone.  How the
kernel model was checked against the real AVX2 kernel: benchmarks/NOTES.md,
"int8 on every CPU"; tests/export/test_int8_kernels.py repeats that check on
whatever CPU runs the suite.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clip_onnx.errors import ExportError

log = logging.getLogger(__name__)

# The largest same-sign pair magnitude of s8 weights that u8 activations (<= 255) cannot push past int16.
PAIR_LIMIT = 128
# The kernel paths the proof covers: the two that add pairs in int16, and the three that do not.
COVERED_PATHS = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx")
# Integer ops whose input 1 is the weight (B) and whose input 0 arrives as u8.
_INTEGER_MATMULS = ("MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")
# Integer ops the proof does not model (dynamic MatMul/Gemm quantization emits none of them).
_UNPROVEN = ("ConvInteger", "QLinearMatMul", "QLinearConv", "QGemm", "QAttention")


def pair_sums(weights: np.ndarray, k_axis: int = 0) -> np.ndarray:
    """Per aligned pair along ``k_axis`` (rows 2i and 2i + 1), the larger of its same-sign magnitude sums.

    That is what one ``vpmaddubsw`` lane can reach with activations of 255. An odd K pairs its last row with
    the zero padding MLAS packs after it.
    """
    w = np.moveaxis(np.asarray(weights, dtype=np.float64), k_axis, 0)
    if w.shape[0] % 2:
        w = np.concatenate([w, np.zeros((1, *w.shape[1:]))])
    even, odd = w[0::2], w[1::2]
    positive = np.maximum(even, 0) + np.maximum(odd, 0)
    negative = np.maximum(-even, 0) + np.maximum(-odd, 0)
    return np.maximum(positive, negative)


def _default_scale(weights: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """ONNX Runtime's symmetric s8 scale: max |w| / 127, per tensor or per channel."""
    reduce = None if channel_axis is None else tuple(a for a in range(weights.ndim) if a != channel_axis)
    absmax = np.abs(weights).max(axis=reduce, keepdims=True)
    return np.where(absmax > 0, absmax / 127.0, 1.0)


def weight_ranges(weights: np.ndarray, k_axis: int, per_channel: bool) -> np.ndarray | None:
    """The rmax (per channel: one per output column) that makes ``weights`` pair-safe, or None if its own is.

    None means ONNX Runtime's default scale already keeps every rounded pair within PAIR_LIMIT.
    """
    channel_axis = (1 - k_axis) if per_channel else None
    scale = _default_scale(weights, channel_axis)
    rounded = np.clip(np.rint(weights / scale), -127, 127)
    if pair_sums(rounded, k_axis).max(initial=0) <= PAIR_LIMIT:
        return None
    sums = pair_sums(weights, k_axis)
    bound = sums.max(axis=0) if per_channel else np.asarray(sums.max())
    return np.where(bound > 0, bound, 1.0)


@dataclass
class KernelReport:
    """What ``check_graph`` found: every integer MatMul of a graph, and whether each is proven exact."""

    matmuls: int = 0
    s8_weights: int = 0
    u8_weights: int = 0
    max_pair_sum: int = 0
    unsafe: list[str] = field(default_factory=list)

    def to_record(self, bounded: int) -> dict[str, Any]:
        """The manifest's ``int8_kernels`` record (``bounded``: how many weights got the pair-bounded scale)."""
        return {
            "matmuls": self.matmuls,
            "s8_weights": self.s8_weights,
            "u8_weights": self.u8_weights,
            "pair_bounded_scales": bounded,
            "max_pair_sum": self.max_pair_sum,
            "pair_limit": PAIR_LIMIT,
            "covers": list(COVERED_PATHS),
            "proof": "static: no aligned same-sign pair of s8 weights along K exceeds the limit, so the int16 "
            "pair sums of the AVX2 and AVX-512BW kernels cannot saturate; u8 weights run u8 x u8 kernels, "
            "which add in int32 everywhere",
        }


def check_graph(model: Any, base_dir: str = "") -> KernelReport:
    """Prove that every integer MatMul of a quantized ``onnx`` model computes exact sums on every x86 path.

    The report's ``unsafe`` names each MatMul that is not proven: an s8 weight with a pair over the limit,
    a weight that is not a constant, or an activation that is not dynamically quantized u8.
    """
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    report = KernelReport()
    for node in model.graph.node:
        where = f"{node.op_type} {node.name or node.output[0]!r}"
        if node.op_type in _UNPROVEN:
            report.unsafe.append(f"{where}: an integer op the kernel proof does not cover")
        if node.op_type not in _INTEGER_MATMULS:
            continue
        report.matmuls += 1
        if node.op_type != "DynamicQuantizeMatMul" and not _is_dynamic_u8(node.input[0], producers):
            report.unsafe.append(f"{where}: its activation is not dynamically quantized u8")
            continue
        weight = node.input[1]
        if weight in initializers:
            array = numpy_helper.to_array(initializers[weight], base_dir)
        elif _is_dynamic_u8(weight, producers):
            report.u8_weights += 1  # u8 x u8: no saturating kernel exists for it
            continue
        else:
            report.unsafe.append(f"{where}: its weight {weight!r} is not a constant")
            continue
        if array.dtype == np.uint8:
            report.u8_weights += 1
            continue
        if array.dtype != np.int8 or array.ndim != 2:
            report.unsafe.append(f"{where}: weight {weight!r} is {array.dtype} {list(array.shape)}, not 2-D s8 or u8")
            continue
        report.s8_weights += 1
        largest = int(pair_sums(array).max(initial=0))
        report.max_pair_sum = max(report.max_pair_sum, largest)
        if largest > PAIR_LIMIT:
            report.unsafe.append(f"{where}: weight {weight!r} has a pair summing to {largest} > {PAIR_LIMIT}")
    return report


def _is_dynamic_u8(name: str, producers: Mapping[str, Any]) -> bool:
    producer = producers.get(name)
    return producer is not None and producer.op_type == "DynamicQuantizeLinear" and producer.output[0] == name


def pair_safe_overrides(model: Any, base_dir: str, per_channel: bool) -> dict[str, list[dict[str, Any]]]:
    """``TensorQuantOverrides`` for ``quantize_dynamic``: a pair-bounded range for each weight that needs one."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    overrides: dict[str, list[dict[str, Any]]] = {}
    for name, k_axis in _matmul_weights(model, initializers):
        if name in overrides:
            continue
        bound = weight_ranges(numpy_helper.to_array(initializers[name], base_dir), k_axis, per_channel)
        if bound is None:
            continue
        if per_channel:
            channel_axis = 1 - k_axis
            overrides[name] = [{"rmin": -float(b), "rmax": float(b)} for b in bound.reshape(-1)]
            overrides[name][0]["axis"] = channel_axis
        else:
            overrides[name] = [{"rmin": -float(bound), "rmax": float(bound)}]
    log.debug("pair-bounded scales for %d of the weights", len(overrides))
    return overrides


def _matmul_weights(model: Any, initializers: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    """(initializer name, K axis) of each 2-D constant weight of a MatMul or Gemm, as the quantizer sees them."""
    for node in model.graph.node:
        if len(node.input) < 2 or node.input[1] not in initializers or len(initializers[node.input[1]].dims) != 2:
            continue
        if node.op_type == "MatMul":
            yield node.input[1], 0
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            yield node.input[1], 1 if trans_b else 0


def require_exact(report: KernelReport, graph: str) -> None:
    """ExportError unless ``report`` proves every integer MatMul exact: a quantization that is not is a bug."""
    if report.unsafe:
        raise ExportError(
            f"the int8 {graph} graph is not proven to compute the same on every CPU: "
            + "; ".join(report.unsafe[:5])
            + (f" (and {len(report.unsafe) - 5} more)" if len(report.unsafe) > 5 else "")
        )
