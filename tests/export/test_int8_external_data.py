"""int8 lowering of graphs whose weights live in external data (sources over 2 GiB), on the tiny model."""

import numpy as np
import onnx

from clip_onnx.export import onnx as onnx_export
from clip_onnx.export.int8 import has_external_data, quantize_int8
from clip_onnx.export.pipeline import export_bundle
from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images
from clip_onnx.thresholds import THRESHOLDS
from tests.manifests import SELF_TEST_CLIP


def test_external_data_graphs_lower_to_int8_with_data_named_after_the_graph(
    tiny_checkpoint, tiny_bundle, tmp_path, monkeypatch
):
    # Every graph, fp32 and int8 alike, counts as "over the limit": weights go to <graph>.data.
    monkeypatch.setattr(onnx_export, "_EXTERNAL_DATA_THRESHOLD", 0)
    bundle = export_bundle(str(tiny_checkpoint), tmp_path / "b", precision="int8", gate_images=16, min_agreement=0)
    assert sorted(bundle.manifest.files) == sorted(
        ["bpe.model", "textual.onnx", "textual.onnx.data", "visual.onnx", "visual.onnx.data", *SELF_TEST_CLIP]
    )
    for tower in ("visual", "textual"):
        path = bundle.path / f"{tower}.onnx"
        assert bundle.manifest.to_dict()["graphs"][tower]["precision"] == "int8" and has_external_data(path)
        model = onnx.load(path)
        assert any(t.data_type == onnx.TensorProto.INT8 for t in model.graph.initializer)
    # Held to the int8 gate's own bound against the fp32 bundle of the same checkpoint, both towers.
    int8, fp32 = ClipModel.load(bundle.path), ClipModel.load(tiny_bundle)
    texts, images = ["кот", "собака на траве", "красный автомобиль"], synthetic_images(4, seed=8)
    for encode in ("encode_text", "encode_image"):
        items = texts if encode == "encode_text" else images
        cosines = np.sum(getattr(int8, encode)(items) * getattr(fp32, encode)(items), axis=1)
        assert cosines.min() >= THRESHOLDS["int8"].min_cosine, (encode, cosines)


def test_a_result_that_fits_is_written_inline_and_the_old_data_file_goes(tiny_bundle, tmp_path):
    from clip_onnx.export.precision import _swap_graph

    source = tmp_path / "visual.onnx"
    onnx.save_model(
        onnx.load(tiny_bundle / "visual.onnx"),
        source,
        save_as_external_data=True,
        location="visual.onnx.data",
        size_threshold=0,
    )
    assert has_external_data(source)
    candidate = tmp_path / "visual.int8.onnx"
    details = quantize_int8(source, candidate)
    assert details["weight_type"] == "QInt8"
    assert not has_external_data(candidate) and not (tmp_path / "visual.int8.onnx.data").exists()
    _swap_graph(candidate, source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visual.onnx"]
    assert any(t.data_type == onnx.TensorProto.INT8 for t in onnx.load(source).graph.initializer)
