"""embed_dataset takes one EmbedOptions (the 0.1 keywords still work), and the job runs on the chosen backend."""

from __future__ import annotations

import numpy as np
import pytest

from clip_onnx.batch import EmbedOptions, embed_dataset
from clip_onnx.errors import InputError
from clip_onnx.runtime import ClipModel


def test_options_and_the_old_keywords_embed_alike(demo_bundle, tmp_path):
    texts = ["красный круг", "синий квадрат", "зелёная звезда"]
    options = EmbedOptions(batch_size=2, workers=1, backend="auto")
    new = embed_dataset(demo_bundle, tmp_path / "a.npy", options, texts=texts)
    old = embed_dataset(demo_bundle, tmp_path / "b.npy", texts=texts, batch_size=2, workers=1)
    assert new.embedded == old.embedded == 3
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, ClipModel.load(demo_bundle).encode_text(texts), atol=1e-6)


def test_options_are_checked_before_anything_is_read(demo_bundle, tmp_path):
    with pytest.raises(InputError, match="unknown backend 'openvino'; choose one of onnxruntime, tensorrt, auto"):
        EmbedOptions(backend="openvino")
    with pytest.raises(InputError, match="part_size must be an int >= 1, got 0"):
        EmbedOptions(part_size=0)
    with pytest.raises(TypeError, match="not both"):
        embed_dataset(demo_bundle, tmp_path / "c.npy", EmbedOptions(), texts=["a"], batch_size=4)
    with pytest.raises(TypeError, match=r"unexpected embed option\(s\) \['batchsize'\]"):
        embed_dataset(demo_bundle, tmp_path / "c.npy", texts=["a"], batchsize=4)
    assert not list(tmp_path.iterdir())
