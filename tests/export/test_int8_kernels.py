"""int8 numbers that hold on every x86 CPU: the kernel model, checked against this CPU's real kernel, and its proof.

ONNX Runtime's u8 x s8 GEMM adds aligned pairs of products along K in a
saturating int16 on CPUs without VNNI (AVX2, AVX-512BW) and in int32 on VNNI
and AMX ones. These tests run on whichever CPU the suite has:

- the NumPy model of the kernel this CPU takes (``emulate``) must reproduce ONNX
  Runtime's output on weights built to saturate, and the other kernel's model
  must not: so the model is checked against the real kernel on every CI machine;
- the exporter's pair-bounded weights must pass the static proof, and give on
  this CPU what the exact (int32) kernel gives, for single MatMuls and whole towers.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from clip_onnx import machine
from clip_onnx.export.int8 import quantize_int8
from clip_onnx.export.int8_kernels import PAIR_LIMIT, check_graph, pair_sums, weight_ranges
from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images

K, N = 96, 40
PATH = machine.int8_kernel_path()
if PATH == "other":
    pytest.skip(
        "the int8 kernel model covers x86 with AVX2 or better; this CPU takes another path "
        "(docs/precision.md, 'Numerics that hold on every CPU')",
        allow_module_level=True,
    )
SATURATES = PATH in machine.PAIRWISE_INT16_PATHS


def _matmul_graph(weights: np.ndarray, path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "one-matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, weights.shape[1]])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def _saturating_weights(seed: int = 0) -> np.ndarray:
    """Weights whose default s8 quantization puts aligned same-sign pairs far over the int16 limit.

    Every column holds a pair of the tensor's largest magnitude at an even row, placed at random (also
    past MLAS's 128-deep K blocks for larger K); one column holds the same pair at an odd row (not aligned:
    never saturates) and the rest is small noise.
    """
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, (K, N))
    for column in range(N - 1):
        row = 2 * int(rng.integers(0, K // 2))
        w[row : row + 2, column] = (1.0, 1.0) if column % 2 else (-1.0, -1.0)
    w[5:7, N - 1] = 1.0
    return w


def _activations(rows: int = 6, seed: int = 1) -> np.ndarray:
    """Positive activations with many at the maximum, which DynamicQuantizeLinear maps to 255."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (rows, K)).astype(np.float32)
    x[:, rng.random(K) < 0.5] = 1.0
    return x


def _quantized(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    """The s8 weight and its scale from a one-MatMul graph quantize_dynamic wrote."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "MatMulInteger")
    weight = inits[node.input[1]]
    scale = inits[node.input[1].removesuffix("_quantized") + "_scale"]
    return weight, scale


def emulate(x: np.ndarray, weight: np.ndarray, scale: np.ndarray, saturate: bool) -> np.ndarray:
    """ONNX Runtime's DynamicQuantizeMatMul in NumPy: u8 activations, s8 weights, int16 pair sums if ``saturate``."""
    low, high = min(0.0, float(x.min())), max(0.0, float(x.max()))
    a_scale = np.float32((high - low) / 255)
    a_zero = int(np.clip(np.rint(-low / a_scale), 0, 255))
    a = np.clip(np.rint(x / a_scale) + a_zero, 0, 255).astype(np.int64)
    b = weight.astype(np.int64)
    if saturate:
        padded_a = np.pad(a, ((0, 0), (0, a.shape[1] % 2)))
        padded_b = np.pad(b, ((0, b.shape[0] % 2), (0, 0)))
        pairs = padded_a[:, 0::2, None] * padded_b[None, 0::2] + padded_a[:, 1::2, None] * padded_b[None, 1::2]
        sums = np.clip(pairs, -32768, 32767).sum(axis=1)
    else:
        sums = a @ b
    sums = sums - a_zero * b.sum(axis=0)
    return (sums * (a_scale * scale.astype(np.float32))).astype(np.float32)


def _run(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_the_kernel_model_reproduces_this_cpus_int8_kernel_and_tells_the_two_paths_apart(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for per_channel in (False, True):
        _matmul_graph(_saturating_weights(), tmp_path / "f.onnx")
        quantize_dynamic(tmp_path / "f.onnx", tmp_path / "q.onnx", weight_type=QuantType.QInt8, per_channel=per_channel)
        weight, scale = _quantized(onnx.load(tmp_path / "q.onnx"))
        x = _activations()
        got = _run(tmp_path / "q.onnx", x)
        this, other = emulate(x, weight, scale, SATURATES), emulate(x, weight, scale, not SATURATES)
        tolerance = 1e-5 * float(np.abs(this).max())
        assert np.abs(got - this).max() <= tolerance, (PATH, per_channel, np.abs(got - this).max())
        # The weights are built so that the two kernels differ: the check above can tell which one ran.
        assert np.abs(this - other).max() > 100 * tolerance
        assert check_graph(onnx.load(tmp_path / "q.onnx")).unsafe  # the default scale is not provable


def test_pair_bounded_weights_are_proven_and_give_the_exact_sums_on_this_cpu(tmp_path):
    _matmul_graph(_saturating_weights(3), tmp_path / "f.onnx")
    x = _activations(seed=4)
    for per_channel in (False, True):
        details = quantize_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", per_channel=per_channel, fuse=False)
        record = details["int8_kernels"]
        assert record["pair_bounded_scales"] == 1 and record["max_pair_sum"] <= PAIR_LIMIT
        model = onnx.load(tmp_path / "q.onnx")
        assert not check_graph(model).unsafe
        weight, scale = _quantized(model)
        exact = emulate(x, weight, scale, saturate=False)
        assert np.array_equal(exact, emulate(x, weight, scale, saturate=True))
        assert np.abs(_run(tmp_path / "q.onnx", x) - exact).max() <= 1e-5 * float(np.abs(exact).max())


def test_pair_sums_take_the_aligned_pairs_and_the_padding_of_an_odd_k():
    q = np.array([[100], [29], [-60], [-70], [127]])
    assert pair_sums(q).ravel().tolist() == [129, 130, 127]
    assert pair_sums(q.T, k_axis=1).ravel().tolist() == [129, 130, 127]


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_weight_ranges_keep_every_rounded_pair_within_the_limit(seed, per_channel):
    rng = np.random.default_rng(seed)
    weights = rng.standard_t(3, (64, 48)) if seed % 2 else rng.uniform(-1, 1, (63, 48))
    bound = weight_ranges(weights, k_axis=0, per_channel=per_channel)
    assert bound is not None  # heavy tails and uniform weights both overflow at the default scale
    q = np.clip(np.rint(weights / (np.asarray(bound) / 127.0)), -127, 127)
    assert pair_sums(q).max() <= PAIR_LIMIT


def test_weights_safe_at_the_default_scale_keep_it():
    weights = np.zeros((8, 4))
    weights[0, :] = 1.0  # the largest weight's partner is zero: a pair of 127 at most
    assert weight_ranges(weights, k_axis=0, per_channel=False) is None


def _exact_twin(path, out) -> None:
    """The graph with each s8 weight moved to u8 (+128, zero point 128): the same sums, through ONNX Runtime's
    u8 x u8 kernel, which adds in int32 on every CPU. It is what a VNNI or AMX CPU computes for the original."""
    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "MatMulInteger" or node.input[1] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        zero = numpy_helper.to_array(inits[node.input[3]])
        assert weight.dtype == np.int8 and not zero.any()
        inits[node.input[1]].CopyFrom(
            numpy_helper.from_array((weight.astype(np.int16) + 128).astype(np.uint8), node.input[1])
        )
        inits[node.input[3]].CopyFrom(numpy_helper.from_array(np.full(zero.shape, 128, np.uint8), node.input[3]))
    onnx.save(model, out)


def test_a_quantized_tower_gives_on_this_cpu_what_an_exact_kernel_gives(demo_bundle, tmp_path):
    """The real run behind the static proof: whole int8 towers of the demo model, pair-bounded, on this CPU."""
    model = ClipModel.load(demo_bundle, self_test=False)
    feeds = {
        "visual": {"pixel_values": model.preprocess(synthetic_images(8, seed=11))},
        "textual": model.tokenize(["круг", "красная звезда", "фото синего кольца", ""]),
    }
    for tower, feed in feeds.items():
        graph = tmp_path / f"{tower}.int8.onnx"
        quantize_int8(demo_bundle / f"{tower}.onnx", graph)
        _exact_twin(graph, tmp_path / f"{tower}.exact.onnx")
        runs = [
            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0]
            for p in (graph, tmp_path / f"{tower}.exact.onnx")
        ]
        assert np.abs(runs[0] - runs[1]).max() <= 1e-4 * float(np.abs(runs[1]).max()), (tower, PATH)
