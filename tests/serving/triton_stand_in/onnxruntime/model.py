"""TEST STAND-IN for Triton's C++ ONNX Runtime backend. Not shipped, not for serving.

No pip package ships the real ``onnxruntime`` backend (it comes only inside the
``nvcr.io/nvidia/tritonserver`` images), so the tests serve ``onnxruntime_onnx``
models through this Python-based backend of the same name: Triton maps the
platform to the backend name and finds ``<backend dir>/onnxruntime/model.py``.

It does what the tests rely on the real backend for:
- loads ``<version>/model.onnx``, a file or Triton's directory form
  ``<version>/model.onnx/model.onnx`` with the graph's external data beside it;
- refuses to load when the config's input/output names, data types or dims
  disagree with the graph, as the real backend refuses;
- runs every request of a dynamic batch in one ONNX Runtime call and splits
  the outputs back, so Triton's statistics count real batched executions.

Deliberately independent of clip_onnx: it checks what clip_onnx writes.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# ONNX Runtime's type strings and the Triton config types the real backend pairs them with.
ORT_TO_TRITON = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(double)": "TYPE_FP64",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int8)": "TYPE_INT8",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(bool)": "TYPE_BOOL",
    "tensor(string)": "TYPE_STRING",
}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        path = os.path.join(version_dir, config.get("default_model_filename") or "model.onnx")
        if os.path.isdir(path):
            path = os.path.join(path, "model.onnx")
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"stand-in onnxruntime: no graph at {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.batching = int(config.get("max_batch_size", 0)) > 0
        _check(config, "input", self.session.get_inputs(), self.batching)
        _check(config, "output", self.session.get_outputs(), self.batching)
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        feeds = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests] for name in self.inputs
        }
        sizes = [len(a) for a in feeds[self.inputs[0]]]
        try:
            results = self.session.run(self.outputs, {k: np.concatenate(v) for k, v in feeds.items()})
        except Exception as exc:  # the real backend fails the whole batch on a runtime error too
            error = pb_utils.TritonError(f"onnxruntime stand-in: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        bounds = np.cumsum(sizes)[:-1]
        parts = [np.split(result, bounds) for result in results]
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, part[i]) for name, part in zip(self.outputs, parts, strict=True)]
            )
            for i in range(len(requests))
        ]


def _check(config, kind, graph_values, batching):
    """Refuse a config whose tensors disagree with the graph's: names, then type and dims."""
    declared = {t["name"]: t for t in config.get(kind, [])}
    graph = {v.name: v for v in graph_values}
    unknown, missing = sorted(set(declared) - set(graph)), sorted(set(graph) - set(declared))
    # Every graph input must be fed; outputs may be a subset, as the real backend allows.
    if unknown or (kind == "input" and missing):
        raise pb_utils.TritonModelException(
            f"stand-in onnxruntime: config {kind}s {sorted(declared)} do not match the graph's {sorted(graph)}"
        )
    for name, tensor in declared.items():
        value = graph[name]
        expected = ORT_TO_TRITON.get(value.type, value.type)
        if tensor["data_type"] != expected:
            raise pb_utils.TritonModelException(
                f"stand-in onnxruntime: {kind} {name!r} is {tensor['data_type']} in the config, {expected} in the graph"
            )
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in value.shape]
        if batching:
            if shape[0] != -1:
                raise pb_utils.TritonModelException(
                    f"stand-in onnxruntime: max_batch_size > 0 but {kind} {name!r} has a fixed first axis {shape}"
                )
            shape = shape[1:]
        dims = [int(d) for d in tensor["dims"]]
        # A symbolic graph axis accepts any config dim; a fixed one must be repeated exactly.
        if len(dims) != len(shape) or any(g != -1 and g != c for g, c in zip(shape, dims, strict=True)):
            raise pb_utils.TritonModelException(
                f"stand-in onnxruntime: {kind} {name!r} has dims {dims} in the config, {shape} in the graph"
            )
