"""The self-test a bundle carries: written at export, replayed at load and by `clip-onnx verify`, typed on a miss."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from clip_onnx import machine
from clip_onnx.bundle import MANIFEST, read_bundle
from clip_onnx.errors import InputError, SelfTestError
from clip_onnx.manifest import Manifest
from clip_onnx.runtime import ClipModel, run_self_test
from clip_onnx.runtime.self_test import tower_threshold
from tests.manifests import rehash

CLI = [sys.executable, "-c", "from clip_onnx.cli import main; main()"]


def verify(bundle, *args):
    return subprocess.run([*CLI, "verify", str(bundle), *args], capture_output=True, text=True, timeout=300)


def test_an_int8_bundle_records_its_self_test_its_gate_machine_and_its_kernel_proof(demo_int8_bundle):
    manifest = read_bundle(demo_int8_bundle).manifest
    spec = manifest.self_test
    assert len(spec.images) == 4 and len(spec.texts) == 8 and set(spec.references) == {"visual", "textual"}
    assert all(name in manifest.files for name in (*spec.images, *spec.references.values()))
    assert sum((demo_int8_bundle / n).stat().st_size for n in spec.images) < 200_000
    assert set(spec.export_cosine) == {"visual", "textual"} and min(spec.export_cosine.values()) > 0.998
    assert manifest.gate_machine["int8_kernel"] == machine.int8_kernel_path()
    assert manifest.gate_machine["versions"]["onnxruntime"] == machine.describe()["versions"]["onnxruntime"]
    for graph in manifest.graphs.values():
        proof = graph.lowering["int8_kernels"]
        assert graph.precision == "int8" and proof["max_pair_sum"] <= proof["pair_limit"] == 128
        assert set(proof["covers"]) == {"avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx"}
        assert proof["matmuls"] == proof["s8_weights"] + proof["u8_weights"] > 0


def test_the_manifest_reads_back_what_it_writes(demo_int8_bundle, demo_bundle):
    for bundle in (demo_int8_bundle, demo_bundle):
        manifest = read_bundle(bundle).manifest
        on_disk = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
        assert manifest.to_dict() == on_disk
        assert Manifest.from_dict(on_disk) == manifest


def test_a_good_bundle_passes_at_load_and_in_verify(demo_int8_bundle):
    model = ClipModel.load(demo_int8_bundle, self_test=True)
    report = run_self_test(model)
    assert report.passed and [c.tower for c in report.checks] == ["visual", "textual"]
    for check in report.checks:
        assert check.items == (4 if check.tower == "visual" else 8)
        assert abs(check.min_cosine - check.export_cosine) < 1e-4  # the same CPU class computes the same
        assert check.threshold == pytest.approx(math.cos(math.acos(0.99999) + math.acos(0.998)))
    done = verify(demo_int8_bundle)
    assert done.returncode == 0, done.stderr
    assert "PASS" in done.stdout and "int8 gate 0.998" in done.stdout and machine.cpu_model() in done.stdout
    assert "largest s8 pair sum" in done.stdout


def test_an_fp32_bundle_is_tested_at_load_only_when_asked(demo_bundle, tmp_path):
    bundle = shutil.copytree(demo_bundle, tmp_path / "fp32")
    reference = bundle / "self_test" / "textual.npy"
    np.save(reference, -np.load(reference))  # a reference no machine reproduces
    rehash(bundle, "self_test/textual.npy")
    ClipModel.load(bundle)  # fp32 on the CPU provider: "auto" does not test
    with pytest.raises(SelfTestError, match="textual tower"):
        ClipModel.load(bundle, self_test=True)
    ClipModel.load(bundle, towers=("visual",), self_test=True)  # only the open towers are tested


def test_a_bundle_without_a_self_test_loads_with_a_notice(demo_int8_bundle, tmp_path, caplog):
    bundle = shutil.copytree(demo_int8_bundle, tmp_path / "old")
    path = bundle / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    del manifest["self_test"]
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("self_test/")}
    path.write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(bundle / "self_test")
    with caplog.at_level("WARNING", logger="clip_onnx.runtime.self_test"):
        model = ClipModel.load(bundle)
    assert model.encode_text(["круг"]).shape == (1, model.embed_dim)
    notices = [r.getMessage() for r in caplog.records if "carries no self-test" in r.getMessage()]
    assert len(notices) == 1 and "int8" in notices[0]
    done = verify(bundle)
    assert done.returncode == 1 and "carries no self-test" in done.stderr


def test_the_self_test_argument_is_checked(demo_bundle):
    with pytest.raises(InputError, match="self_test must be 'auto', True or False, got 'yes'"):
        ClipModel.load(demo_bundle, self_test="yes")


def test_a_tensorrt_plan_is_held_to_the_engine_gate_too(demo_int8_bundle):
    bundle = read_bundle(demo_int8_bundle)
    cpu, cpu_words = tower_threshold(bundle, "visual", "onnxruntime")
    gpu, gpu_words = tower_threshold(bundle, "visual", "tensorrt")
    assert gpu == pytest.approx(math.cos(math.acos(0.99999) + math.acos(0.998) + math.acos(0.999)))
    assert gpu < cpu and "engine gate 0.999" in gpu_words and "engine" not in cpu_words
