"""INT8 at full size, one architecture per family, with random weights (no download): slow, run with `-m slow`.

Random weights make top-1 a coin toss between near-equal scores, so these runs set
``min_agreement=0`` and hold each tower to the int8 cosine threshold alone; the
figures (cosine per tower, sizes, peak RSS, speedups) are in docs/performance.md,
"int8 across the families", and benchmarks/NOTES.md, "int8 on CPU".
"""

import pytest

from clip_onnx.export.pipeline import export_bundle
from clip_onnx.parity import THRESHOLDS
from clip_onnx.runtime import ClipClassifier, ClipModel
from clip_onnx.synthetic import synthetic_images

pytestmark = pytest.mark.slow

FAMILIES = [
    "ViT-B-32@openai",
    "OFA-Sys/chinese-clip-vit-base-patch16",
    "vit_base_patch32_clip_224.openai_ft_in1k",
    "xlm-roberta-large-ViT-H-14@frozen_laion5b_s13b_b90k",
]


@pytest.mark.parametrize("source", FAMILIES)
def test_int8_exports_at_full_size_and_runs_in_the_runtime(source, tmp_path):
    bundle = export_bundle(
        source, tmp_path / "b", random_weights=True, precision="int8", min_agreement=0, gate_images=128
    )
    gate = bundle.manifest.to_dict()["parity"][-1]
    assert gate["passed"] and gate["thresholds"]["min_top1_agreement"] == 0.0
    assert min(r["min_cosine"] for r in gate["rows"]) >= THRESHOLDS["int8"].min_cosine
    assert {g.precision for g in bundle.manifest.graphs.values()} == {"int8"}, bundle.manifest.graphs
    images = synthetic_images(2)
    if bundle.manifest.kind == "classifier":
        assert ClipClassifier.load(bundle.path).predict(images, top_k=1).probs.shape == (2, 1)
    else:
        model = ClipModel.load(bundle.path)
        assert model.encode_image(images).shape == model.encode_text(["a cat", "кошка"]).shape
