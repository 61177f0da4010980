"""A bundle whose int8 graph was altered and re-hashed: the sha256 check passes, the self-test must not.

Altering a graph needs the onnx package, which the runtime-only install lacks;
the rest of the self-test's tests are in tests/runtime/test_self_test.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import onnx
import pytest
from onnx import numpy_helper

from clip_onnx import machine
from clip_onnx.errors import SelfTestError
from clip_onnx.runtime import ClipModel
from tests.manifests import rehash


def test_a_graph_altered_and_rehashed_fails_with_the_typed_error(demo_int8_bundle, tmp_path):
    bundle = shutil.copytree(demo_int8_bundle, tmp_path / "altered")
    graph = onnx.load(bundle / "visual.onnx")
    scales = [t for t in graph.graph.initializer if t.name.endswith("_scale") and t.data_type == onnx.TensorProto.FLOAT]
    for tensor in scales[: len(scales) // 2]:  # what a kernel that mis-adds would do to half the MatMuls
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * -0.5, tensor.name))
    onnx.save(graph, bundle / "visual.onnx")
    rehash(bundle, "visual.onnx")
    with pytest.raises(SelfTestError) as failed:
        ClipModel.load(bundle)  # "auto": an int8 graph is always tested
    message = str(failed.value)
    assert "visual tower: min cosine" in message and "below 0.997707" in message and "textual" not in message
    assert machine.cpu_model() in message and "clip-onnx verify" in message
    assert not failed.value.report.passed
    done = subprocess.run(
        [sys.executable, "-c", "from clip_onnx.cli import main; main()", "verify", str(bundle)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "FAIL" in done.stdout + done.stderr
