"""INT8 at full size, one architecture per family, with random weights (no download): slow, run with `-m slow`.

Each export runs the fp32 parity gate against eager PyTorch, then the int8 gate. The big-model CI
step (`-m big`, .ci/run) runs one family a day, in turn (``todays_family``; CLIP_ONNX_FULL_SIZE_FAMILY
names another, or ``all``), so every family comes round within a week without the step growing.

Random weights make top-1 a coin toss between near-equal scores, so these runs set
``min_agreement=0`` and hold each tower to the int8 cosine threshold alone; the
figures (cosine per tower, sizes, peak RSS, speedups) are in docs/performance.md,
"int8 across the families", and benchmarks/NOTES.md, "int8 on CPU".
"""

from __future__ import annotations

import datetime
import os
import shutil

import pytest

from clip_onnx.export.pipeline import export_bundle
from clip_onnx.parity import THRESHOLDS
from clip_onnx.runtime import ClipClassifier, ClipModel
from clip_onnx.runtime.self_test import run_self_test
from clip_onnx.synthetic import synthetic_images

FAMILIES = [
    "ViT-B-32@openai",
    "OFA-Sys/chinese-clip-vit-base-patch16",
    "vit_base_patch32_clip_224.openai_ft_in1k",
    "xlm-roberta-large-ViT-H-14@frozen_laion5b_s13b_b90k",
]
ROTATION_ENV = "CLIP_ONNX_FULL_SIZE_FAMILY"


def todays_family(today: datetime.date | None = None) -> list[str]:
    """The families the big-model step exports: $CLIP_ONNX_FULL_SIZE_FAMILY (a source, or "all"), else one a day."""
    chosen = os.environ.get(ROTATION_ENV, "")
    if chosen == "all":
        return list(FAMILIES)
    if chosen:
        if chosen not in FAMILIES:
            raise pytest.UsageError(f"{ROTATION_ENV}={chosen!r} is not one of {FAMILIES} or 'all'")
        return [chosen]
    day = (today or datetime.datetime.now(datetime.timezone.utc).date()).toordinal()
    return [FAMILIES[day % len(FAMILIES)]]


def test_the_rotation_reaches_every_family_within_a_week(monkeypatch):
    monkeypatch.delenv(ROTATION_ENV, raising=False)
    start = datetime.date(2026, 12, 7)
    days = [todays_family(start + datetime.timedelta(days=d)) for d in range(len(FAMILIES))]
    assert sorted(f for day in days for f in day) == sorted(FAMILIES)
    monkeypatch.setenv(ROTATION_ENV, "all")
    assert todays_family(start) == FAMILIES
    monkeypatch.setenv(ROTATION_ENV, FAMILIES[3])
    assert todays_family(start) == [FAMILIES[3]]


@pytest.mark.slow
@pytest.mark.parametrize(
    "source", [pytest.param(s, marks=[pytest.mark.big] if s in todays_family() else []) for s in FAMILIES]
)
def test_int8_exports_at_full_size_and_runs_in_the_runtime(source, tmp_path):
    bundle = export_bundle(
        source, tmp_path / "b", random_weights=True, precision="int8", min_agreement=0, gate_images=128
    )
    manifest = bundle.manifest.to_dict()
    fp32 = manifest["parity"][0]
    assert fp32["stage"] == "onnx-fp32" and fp32["passed"] and fp32["top1_agreement"] == 1.0
    gate = manifest["parity"][-1]
    assert gate["passed"] and gate["thresholds"]["min_top1_agreement"] == 0.0
    assert min(r["min_cosine"] for r in gate["rows"]) >= THRESHOLDS["int8"].min_cosine
    assert {g.precision for g in bundle.manifest.graphs.values()} == {"int8"}, bundle.manifest.graphs
    opener = ClipClassifier if bundle.manifest.kind == "classifier" else ClipModel
    model = opener.load(bundle.path, self_test=False)
    # The runtime on this machine against eager PyTorch's outputs recorded at export, every stored item.
    report = run_self_test(model)
    assert report.passed and {c.tower for c in report.checks} == set(bundle.manifest.graphs), report.lines()
    images = synthetic_images(2)
    if bundle.manifest.kind == "classifier":
        assert model.predict(images, top_k=1).probs.shape == (2, 1)
    else:
        assert model.encode_image(images).shape == model.encode_text(["a cat", "кошка"]).shape
    shutil.rmtree(tmp_path / "b")  # gigabytes; pytest keeps the last runs' tmp dirs
