"""Every backend in the registry keeps the same runner contract, and the registry is the one way to open one."""

from __future__ import annotations

import numpy as np
import pytest

from clip_onnx.bundle import read_bundle
from clip_onnx.errors import BackendError, InputError
from clip_onnx.registry import BACKEND_CHOICES, BACKENDS
from clip_onnx.runtime import ClipModel, open_runner, opener
from clip_onnx.runtime.backends.base import Runner


def _open(bundle, tower, name):
    try:
        return open_runner(bundle, tower, name)
    except BackendError as exc:  # TensorRT without a GPU, tensorrt or a plan: the contract cannot run here
        pytest.skip(f"backend {name} does not open on this machine: {exc}")


@pytest.mark.parametrize("name", sorted(BACKENDS))
@pytest.mark.parametrize("tower", ["visual", "textual"])
def test_every_registered_backend_keeps_the_runner_contract(tiny_bundle, name, tower):
    bundle = read_bundle(tiny_bundle)
    model = ClipModel.load(tiny_bundle, self_test=False)
    feed = (
        model.tokenize(["кошка", "собака на траве"])
        if tower == "textual"
        else {"pixel_values": model.preprocess([np.zeros((40, 50, 3), np.uint8), np.full((64, 64, 3), 200, np.uint8)])}
    )
    with _open(bundle, tower, name) as runner:
        assert isinstance(runner, Runner) and runner.backend == name and runner.device
        assert {spec.name for spec in runner.inputs} == set(feed) and runner.output_names
        out = runner.infer(feed)
        assert set(out) == set(runner.output_names)
        (embedding,) = out.values()
        assert embedding.shape == (2, model.embed_dim) and np.isfinite(embedding).all()
        reference = model.runners()[tower].infer(feed)
        np.testing.assert_allclose(embedding, next(iter(reference.values())), atol=1e-3)
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
