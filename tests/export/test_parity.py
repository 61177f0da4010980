"""The one comparator (clip_onnx.parity) and the one lowering loop, on real graphs run by ONNX Runtime."""

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from clip_onnx.bundle import read_bundle
from clip_onnx.errors import ParityError
from clip_onnx.export import precision
from clip_onnx.export.engine_gate import gate_feeds
from clip_onnx.export.families.base import ExportableModel, Tower
from clip_onnx.export.fp16 import fp16_converter
from clip_onnx.export.gate_data import plan_gate
from clip_onnx.export.options import GateOptions
from clip_onnx.export.pipeline import export_bundle, export_model
from clip_onnx.parity import GATE_TEMPLATES, THRESHOLDS, Logits, ZeroShot, compare
from clip_onnx.runtime.backends.onnxruntime import OnnxRuntimeRunner
from clip_onnx.runtime.preprocess import PreprocessSpec
from tests.conftest import TINY_CONFIG, write_checkpoint


def _outputs(bundle_dir: Path, feeds: dict) -> dict:
    out = {}
    for tower, batches in feeds.items():
        with OnnxRuntimeRunner(bundle_dir / f"{tower}.onnx") as runner:
            out[tower] = [next(iter(runner.infer(feed).values())) for feed in batches]
    return out


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory, tiny_bpe):
    """The tiny RuCLIP architecture with other random weights: a candidate that must fail every check."""
    directory = tmp_path_factory.mktemp("other")
    checkpoint = write_checkpoint(directory / "ckpt", TINY_CONFIG, tiny_bpe, seed=1)
    return export_bundle(str(checkpoint), directory / "bundle", check_parity=False).path


def test_compare_passes_a_graph_against_itself_with_the_report_the_manifest_stores(tiny_bundle):
    feeds = gate_feeds(read_bundle(tiny_bundle), images=24)
    reference = _outputs(tiny_bundle, feeds)
    report = compare("same", reference, _outputs(tiny_bundle, feeds), THRESHOLDS["fp32"], ZeroShot(), feeds=feeds)
    record = report.to_dict()
    assert set(record) == {"stage", "thresholds", "top1_agreement", "images", "rows", "passed"}
    assert record["passed"] and record["top1_agreement"] == 1.0 and record["images"] == 8  # the last visual batch
    assert [(r["tower"], r["batch"]) for r in record["rows"]][:2] == [("visual", 16), ("visual", 8)]
    assert all(r["seq"] for r in record["rows"] if r["tower"] == "textual")
    assert record["thresholds"] == {"min_cosine": 0.99999, "max_abs": 1e-4, "min_top1_agreement": 1.0}


def test_compare_raises_listing_every_failing_output_and_carries_the_report(tiny_bundle, other_weights):
    feeds = gate_feeds(read_bundle(tiny_bundle), images=32)
    joined = {t: [np.concatenate(v)] for t, v in _outputs(tiny_bundle, feeds).items()}
    other = {t: [np.concatenate(v)] for t, v in _outputs(other_weights, feeds).items()}
    with pytest.raises(ParityError) as err:
        compare("other-weights", joined, other, THRESHOLDS["fp16"], ZeroShot(len(GATE_TEMPLATES)))
    failures = err.value.failures
    assert len(failures) == 3, failures
    assert failures[0].startswith("other-weights visual batch 32: cosine")
    assert failures[1].startswith("other-weights textual batch 50: cosine")
    assert re.fullmatch(r"other-weights top-1 agreement \d+\.\d\d% over 32 images < 99\.50%", failures[2])
    assert err.value.report.to_dict()["passed"] is False and err.value.report.stage == "other-weights"
    # Only the tower that differs fails when the other one is shared.
    with pytest.raises(ParityError) as err:
        compare("visual-only", joined, {**joined, "visual": other["visual"]}, THRESHOLDS["fp16"], ZeroShot(5))
    assert not any("textual" in f for f in err.value.failures) and len(err.value.failures) == 2


# ---------------------------------------------------------------------------
# Classifiers: logits top-1 and the same lowering loop as CLIP, load probe included
# ---------------------------------------------------------------------------


class _TinyClassifier(torch.nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 8, stride=8)
        self.head = torch.nn.Linear(16 * 4 * 4, classes)

    def forward(self, pixel_values):
        return self.head(torch.relu(self.conv(pixel_values)).flatten(1))


def _classifier() -> ExportableModel:
    classes = tuple(f"class {i}" for i in range(10))
    return ExportableModel(
        name="tiny-classifier",
        family="test",
        source="tests",
        kind="classifier",
        labels=classes,
        visual=Tower(
            "visual", _TinyClassifier(len(classes)).eval(), ("pixel_values",), "logits", {"pixel_values": {0: "batch"}}
        ),
        textual=None,
        logit_scale=1.0,
        embed_dim=len(classes),
        preprocess=PreprocessSpec(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        tokenizer={},
        tokenizer_files={},
        sample_texts=(),
    )


def _unloadable(source: Path, target: Path) -> dict:
    """A converter whose graph ONNX Runtime refuses: a float16 Cast declared as float (an fp16 converter's slip)."""
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 32, 32])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["pixel_values"], ["logits"], to=TensorProto.FLOAT16)], "broken", [x], [y]
    )
    onnx.save(helper.make_model(graph), target)
    return {"method": "broken on purpose"}


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory):
    return export_model(_classifier(), tmp_path_factory.mktemp("cls") / "b")


def test_classifier_fp32_gate_is_logits_top1(classifier_bundle):
    (parity,) = classifier_bundle.manifest.to_dict()["parity"]
    assert parity["stage"] == "onnx-fp32" and parity["passed"] and parity["top1_agreement"] == 1.0
    assert [r["batch"] for r in parity["rows"]] == [
        1,
        3,
        8,
    ] and "sample_texts" not in classifier_bundle.manifest.to_dict()
    logits = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.9]])
    flipped = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 1.0]])
    assert Logits().top1({"visual": [logits]}, {"visual": [flipped]}) == pytest.approx(2 / 3)


def test_classifier_lowering_skips_a_graph_onnxruntime_cannot_open(classifier_bundle, tmp_path, monkeypatch):
    graph = tmp_path / "visual.onnx"
    graph.write_bytes((classifier_bundle.path / "visual.onnx").read_bytes())
    monkeypatch.setattr(precision, "LADDERS", {"fp16": (_unloadable, fp16_converter(()))})
    model = _classifier()
    record = precision.lower(model, {"visual": graph}, "fp16", plan_gate(model, "fp16", GateOptions(images=32)))
    first, second = record["tried"]["visual"]
    assert first["method"] == "broken on purpose" and "min_cosine" not in first
    assert "does not match" in first["error"] or "Type Error" in first["error"]
    assert second["min_cosine"] >= THRESHOLDS["fp16"].min_cosine
    assert record["towers"]["visual"]["precision"] == "fp16"
    (gate,) = record["gate"]
    assert gate["stage"] == "onnx-fp16[visual]" and gate["passed"] and gate["images"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visual.onnx"]

    # A ladder none of whose graphs loads leaves the tower fp32, saying why, and nothing behind.
    graph.write_bytes((classifier_bundle.path / "visual.onnx").read_bytes())
    monkeypatch.setattr(precision, "LADDERS", {"fp16": (_unloadable,)})
    record = precision.lower(model, {"visual": graph}, "fp16", plan_gate(model, "fp16", GateOptions(images=32)))
    assert record["gate"] == [] and "no converted graph loads" in record["towers"]["visual"]["reason"]
    assert graph.read_bytes() == (classifier_bundle.path / "visual.onnx").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visual.onnx"]
