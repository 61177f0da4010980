"""Every backend in the registry keeps the same runner contract, and the registry is the one way to open one."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest

from clip_onnx.bundle import read_bundle
from clip_onnx.errors import BackendError, InputError
from clip_onnx.registry import BACKEND_CHOICES, BACKENDS
from clip_onnx.runtime import ClipModel, open_runner, opener
from clip_onnx.runtime.backends.base import Runner
from clip_onnx.thresholds import THRESHOLDS
from tests.skip_rule import NO_GPU, NO_TENSORRT, tensorrt_missing


@pytest.fixture(scope="module")
def bundle_with_plans(tiny_bundle, tmp_path_factory):
    """The tiny bundle, with TensorRT plans for this GPU where the machine can build them (the skip says why not)."""
    missing = tensorrt_missing()
    if missing:
        pytest.skip(missing)
    from clip_onnx.engines import Profile
    from clip_onnx.export.tensorrt import build_engines

    bundle = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("plans") / "b")
    build_engines(bundle, Profile(1, 4, 8))
    return bundle


def _graph_output(bundle, tower, feed) -> np.ndarray:
    """The fp32 graph's output through a plain ONNX Runtime session: no runner, registry or ClipModel code."""
    session = ort.InferenceSession(str(bundle / f"{tower}.onnx"), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, dict(feed))
    return output


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("name", sorted(BACKENDS))
@pytest.mark.parametrize("tower", ["visual", "textual"])
def test_every_registered_backend_keeps_the_runner_contract(request, tiny_bundle, name, tower):
    path = tiny_bundle if name == "onnxruntime" else request.getfixturevalue("bundle_with_plans")
    model = ClipModel.load(path, self_test=False)
    feed = (
        model.tokenize(["кошка", "собака на траве"])
        if tower == "textual"
        else {"pixel_values": model.preprocess([np.zeros((40, 50, 3), np.uint8), np.full((64, 64, 3), 200, np.uint8)])}
    )
    with open_runner(read_bundle(path), tower, name) as runner:
        assert isinstance(runner, Runner) and runner.backend == name and runner.device
        assert {spec.name for spec in runner.inputs} == set(feed) and runner.output_names
        out = runner.infer(feed)
        assert set(out) == set(runner.output_names)
        (embedding,) = out.values()
        assert embedding.shape == (2, model.embed_dim) and embedding.dtype == np.float32
        expected = _graph_output(path, tower, feed)
        if name == "onnxruntime":  # the same graph in the same engine: exactly the same numbers
            np.testing.assert_array_equal(embedding, expected)
        else:  # another engine: held to the engine gate against the fp32 graph
            assert _cosines(embedding, expected).min() >= THRESHOLDS["engine"].min_cosine
        first = runner.inputs[0]
        with pytest.raises(InputError, match="graph takes inputs"):
            runner.infer({**feed, "extra": feed[first.name]})
        with pytest.raises(InputError, match=f"input '{first.name}' must be a"):
            runner.infer({**feed, first.name: feed[first.name].astype(np.float16)})
        with pytest.raises(InputError, match=f"input '{first.name}' has shape"):
            runner.infer({**feed, first.name: feed[first.name][0]})


def test_an_unknown_backend_is_refused_with_the_choices(tiny_bundle):
    with pytest.raises(InputError, match="unknown backend 'openvino'; choose one of onnxruntime, tensorrt, auto"):
        opener("openvino")
    with pytest.raises(InputError, match="unknown backend"):
        ClipModel.load(tiny_bundle, backend="openvino")
    assert BACKEND_CHOICES == (*BACKENDS, "auto")


def test_auto_takes_the_first_backend_that_opens(tiny_bundle):
    runner = open_runner(read_bundle(tiny_bundle), "visual", "auto")
    # No TensorRT plan was built for this bundle, so auto falls through to ONNX Runtime.
    assert runner.backend == "onnxruntime"


def test_tensorrt_without_a_plan_for_this_bundle_is_a_backend_error_saying_what_is_missing(tiny_bundle):
    missing = tensorrt_missing() or ""
    expected = {NO_TENSORRT: r"pip install 'clip-onnx\[tensorrt\]'", NO_GPU: "no usable CUDA device"}
    with pytest.raises(BackendError, match=expected.get(missing.split(":")[0], "build-engine")):
        open_runner(read_bundle(tiny_bundle), "visual", "tensorrt")
