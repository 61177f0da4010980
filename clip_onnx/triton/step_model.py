"""A clip-onnx step for Triton's Python backend; `clip-onnx triton` copies this file in as ``<version>/model.py``.

Which step it is (tokenize, preprocess, normalize) comes from the config's
``clip_onnx_step`` parameter; the work itself is ``clip_onnx.triton.steps``,
so the server's Python needs ``pip install clip-onnx`` (runtime only, no torch).

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
        step = config["parameters"]["clip_onnx_step"]["string_value"]
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.input = config["input"][0]["name"]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]
        self.step = open_step(step, version_dir, [name for name, _ in self.outputs])

    def execute(self, requests):
        # One response per request: a bad item fails its own request, never its batch-mates.
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        batch = pb_utils.get_input_tensor_by_name(request, self.input).as_numpy()
        try:
            arrays = self.step(batch)
        except InputError as exc:
            # INVALID_ARG: HTTP 400 / gRPC INVALID_ARGUMENT, the client's fault and not the server's.
            error = pb_utils.TritonError(f"InputError: {exc}", pb_utils.TritonError.INVALID_ARG)
            return pb_utils.InferenceResponse(error=error)
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(arrays[name], dtype=dtype)) for name, dtype in self.outputs
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)
