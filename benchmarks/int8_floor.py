"""The int8 GEMM floor: a graph's MatMulInteger nodes alone, at one row count (benchmarks/NOTES.md, "int8 on CPU").

    python benchmarks/int8_floor.py INT8_GRAPH ROWS [--repeat N]

ROWS is the GEMMs' M: tokens x batch (ruclip-b32-384 visual batch 1: 145; text batch 8 padded: 616).
Builds a graph of every MatMulInteger whose weight is an initializer in INT8_GRAPH (the graph as
quantize_dynamic wrote it, before ONNX Runtime fuses it), feeds random u8 activations, and times it
with the runtime's session options (threads: CLIP_ONNX_THREADS).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from clip_onnx.runtime.backends.onnxruntime import default_session_options


def floor_graph(graph: onnx.GraphProto, rows: int) -> tuple[onnx.ModelProto, dict, float]:
    weights = {i.name: i for i in graph.initializer}
    nodes, initializers, inputs, gop = [], [], {}, 0.0
    for node in graph.node:
        if node.op_type != "MatMulInteger" or node.input[1] not in weights:
            continue
        k, n = weights[node.input[1]].dims
        inputs.setdefault(k, helper.make_tensor_value_info(f"a{k}", TensorProto.UINT8, [rows, k]))
        i = len(nodes)
        initializers += [
            numpy_helper.from_array(numpy_helper.to_array(weights[node.input[1]]), f"w{i}"),
            numpy_helper.from_array(np.array(128, np.uint8), f"za{i}"),
        ]
        nodes.append(helper.make_node("MatMulInteger", [f"a{k}", f"w{i}", f"za{i}"], [f"y{i}"]))
        gop += 2 * rows * k * n / 1e9
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.INT32, None) for i in range(len(nodes))]
    model = helper.make_model(
        helper.make_graph(nodes, "int8_floor", list(inputs.values()), outputs, initializers),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    rng = np.random.default_rng(0)
    return model, {f"a{k}": rng.integers(0, 255, (rows, k), dtype=np.uint8) for k in inputs}, gop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", type=Path)
    parser.add_argument("rows", type=int)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    model, feed, gop = floor_graph(onnx.load(args.graph).graph, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "floor.onnx"
        onnx.save(model, path)
        session = ort.InferenceSession(str(path), default_session_options(), providers=["CPUExecutionProvider"])
    times = []
    for i in range(3 + args.repeat):
        start = time.perf_counter()
        session.run(None, feed)
        if i >= 3:
            times.append((time.perf_counter() - start) * 1000)
    median = float(np.median(times))
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else "?"
    print(
        f"{len(model.graph.node)} MatMulInteger nodes, M={args.rows}, {gop:.1f} GOP: median {median:.1f} ms, "
        f"p90 {np.percentile(times, 90):.1f} ms -> {gop / median * 1000:.0f} GOP/s (load avg {load})"
    )


if __name__ == "__main__":
    main()
