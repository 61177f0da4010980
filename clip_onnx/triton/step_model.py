"""A clip-onnx model for Triton's Python backend; `clip-onnx triton` copies this file in as ``<version>/model.py``.

Which step or model it is (tokenize, preprocess; image, text, classify) comes
from the config's ``clip_onnx_step`` parameter; the work itself is
``clip_onnx.triton.steps``, so the server's Python needs ``pip install clip-onnx``
(runtime only, no torch).  A model that cannot open its bundle raises in
``initialize``, and Triton does not mark it READY.

Importable only inside Triton, where ``triton_python_backend_utils`` exists.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from clip_onnx.errors import InputError
from clip_onnx.triton.steps import open_step


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.input = config["input"][0]["name"]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]
        settings = {
            "bundle": parameters.get("clip_onnx_bundle"),
            "threads": parameters.get("clip_onnx_threads"),
            "instances": sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1,
            "max_batch": config.get("max_batch_size") or 32,
        }
        self.step = open_step(parameters["clip_onnx_step"], version_dir, [name for name, _ in self.outputs], settings)

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(request, self.input).as_numpy() for request in requests]
        # One response per request: a bad item fails its own request, never its batch-mates.
        return [self._respond(result) for result in self.step(batches)]

    def _respond(self, result):
        if isinstance(result, InputError):
            # INVALID_ARG: HTTP 400 / gRPC INVALID_ARGUMENT, the client's fault and not the server's.
            error = pb_utils.TritonError(f"InputError: {result}", pb_utils.TritonError.INVALID_ARG)
            return pb_utils.InferenceResponse(error=error)
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(result[name], dtype=dtype)) for name, dtype in self.outputs
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)
