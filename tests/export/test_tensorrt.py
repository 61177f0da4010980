"""TensorRT: the plan bookkeeping (no GPU needed), an ahead-of-time SM89 build with TensorRT-RTX on the CPU,
and the GPU execution path where a GPU and TensorRT exist."""

import importlib.util
import json
from dataclasses import replace

import numpy as np
import pytest

from clip_onnx.engines import Profile, Target, chunks, plan_key, records, select_plan, write_record
from clip_onnx.errors import BackendError, InputError

TARGET = Target("tensorrt", "10.13.0", "NVIDIA H100 80GB HBM3", "9.0")


def test_profile_shapes_keep_static_dims_and_range_the_symbolic_ones():
    profile = Profile(1, 8, 64, opt_seq=16, max_seq=77)
    assert profile.shapes(["batch", 3, 224, 224]) == ((1, 3, 224, 224), (8, 3, 224, 224), (64, 3, 224, 224))
    assert profile.shapes(["batch", "seq"]) == ((1, 1), (8, 16), (64, 77))
    with pytest.raises(InputError, match="--max-seq"):
        Profile().shapes(["batch", "seq"])


@pytest.mark.parametrize("args", [(0, 1, 1), (4, 2, 8), (1, 8, 4)])
def test_profile_rejects_unordered_batches(args):
    with pytest.raises(InputError, match="min <= opt <= max"):
        Profile(*args)


@pytest.mark.parametrize("total,limit", [(1, 64), (64, 64), (65, 64), (200, 7), (0, 3)])
def test_chunks_cover_every_item_once_without_exceeding_the_profile(total, limit):
    pieces = list(chunks(total, limit))
    assert [i for s in pieces for i in range(total)[s]] == list(range(total))
    assert all(0 < s.stop - s.start <= limit for s in pieces)


def test_plan_key_changes_with_graph_tensorrt_gpu_and_profile():
    base = plan_key("a" * 64, TARGET, Profile())
    variants = [
        plan_key("b" * 64, TARGET, Profile()),
        plan_key("a" * 64, replace(TARGET, version="10.14.0"), Profile()),
        plan_key("a" * 64, replace(TARGET, gpu="NVIDIA L4", compute_capability="8.9"), Profile()),
        plan_key("a" * 64, TARGET, Profile(max_batch=32)),
    ]
    assert len({base, *variants}) == 5 and base == plan_key("a" * 64, TARGET, Profile())


def _record(target, graph="g" * 64):
    return {"key": plan_key(graph, target, Profile()), "graph_sha256": graph, "target": target.__dict__}


@pytest.mark.parametrize(
    "built,fragment",
    [
        (replace(TARGET, version="10.8.0"), "built with tensorrt 10.8.0, running tensorrt 10.13.0"),
        (replace(TARGET, gpu="NVIDIA L4", compute_capability="8.9"), "built for NVIDIA L4 (sm 8.9)"),
        (replace(TARGET, product="tensorrt-rtx"), "built with tensorrt-rtx"),
    ],
)
def test_plans_for_another_gpu_or_tensorrt_are_refused(built, fragment):
    with pytest.raises(BackendError, match="Rebuild on this machine") as err:
        select_plan([_record(built)], "visual", "g" * 64, TARGET)
    assert fragment in str(err.value)


def test_plan_for_another_graph_is_refused_and_the_matching_one_chosen():
    stale, good = _record(TARGET, graph="x" * 64), _record(TARGET)
    with pytest.raises(BackendError, match="another visual graph"):
        select_plan([stale], "visual", "g" * 64, TARGET)
    assert select_plan([stale, good], "visual", "g" * 64, TARGET) is good
    with pytest.raises(BackendError, match="build-engine"):
        select_plan([], "visual", "g" * 64, TARGET)


def test_records_round_trip_through_the_bundle(tmp_path):
    (tmp_path / "engines").mkdir()
    write_record(tmp_path, "textual", "k1", {"key": "k1", "x": 1})
    assert records(tmp_path, "textual") == [{"key": "k1", "x": 1}] and records(tmp_path, "visual") == []


def test_tensorrt_backend_without_tensorrt_is_a_clear_error(tiny_bundle):
    if importlib.util.find_spec("tensorrt"):
        pytest.skip("tensorrt is installed here")
    from clip_onnx.runtime import ClipModel

    with pytest.raises(BackendError, match="clip-onnx\\[tensorrt\\]"):
        ClipModel.load(tiny_bundle, backend="tensorrt")
    assert ClipModel.load(tiny_bundle, backend="auto").encode_text(["кот"]).shape == (1, 32)


needs_rtx = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None,
    reason="tensorrt-rtx-cu13 is not installed (pip install tensorrt-rtx-cu13)",
)


@needs_rtx
@pytest.mark.tensorrt
def test_both_graphs_build_sm89_plans_with_dynamic_batch_profiles_on_the_cpu(tiny_bundle, tmp_path):
    import shutil

    from clip_onnx.export.tensorrt import build_engines

    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    built = build_engines(bundle, Profile(1, 8, 64), ahead_of_time="SM89", workspace_gib=0.5)
    assert [r["tower"] for r in built] == ["visual", "textual"]
    for record in built:
        assert record["target"]["compute_capability"] == "8.9" and record["target"]["product"] == "tensorrt-rtx"
        assert (bundle / "engines" / record["plan"]).stat().st_size == record["plan_bytes"] > 100_000
        assert record["profile"]["max_batch"] == 64
    again = build_engines(bundle, Profile(1, 8, 64), ahead_of_time="SM89", workspace_gib=0.5)
    assert [r["key"] for r in again] == [r["key"] for r in built]  # cached, not rebuilt
    # An AOT plan is never offered to the standard runtime on a real GPU.
    record = json.loads(next((bundle / "engines").glob("visual-*.json")).read_text())
    with pytest.raises(BackendError, match="tensorrt-rtx"):
        select_plan([record], "visual", record["graph_sha256"], TARGET)


@needs_rtx
@pytest.mark.tensorrt
def test_parser_errors_are_listed_in_full(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from clip_onnx.errors import ExportError
    from clip_onnx.export.tensorrt import build_plan, import_tensorrt

    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="made.up")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("made.up", 1)]), path
    )
    trt = import_tensorrt("SM89")
    with pytest.raises(ExportError, match="could not parse bad.onnx") as err:
        build_plan(trt, path, Profile(), "fp32", None, "SM89", 0.5, tmp_path / "cache")
    assert "NoSuchOp" in str(err.value)


def _gpu_tensorrt_available() -> bool:
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.skipif(not _gpu_tensorrt_available(), reason="needs a CUDA GPU with tensorrt and cupy")
def test_tensorrt_backend_matches_onnxruntime_on_gpu(tiny_bundle, tmp_path):
    import shutil

    from clip_onnx.export.tensorrt import build_engines
    from clip_onnx.runtime import ClipModel

    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    build_engines(bundle, Profile(1, 4, 8))
    texts = [f"текст {i}" for i in range(19)]  # more than max_batch: chunked
    trt_model, ort_model = ClipModel.load(bundle, backend="tensorrt"), ClipModel.load(bundle)
    cos = np.sum(trt_model.encode_text(texts) * ort_model.encode_text(texts), axis=1)
    assert cos.min() > 0.999


# ---------------------------------------------------------------------------
# The engine stage of the gate: plan against ONNX graph on inputs from the bundle alone
# ---------------------------------------------------------------------------


def test_engine_gate_inputs_come_from_the_bundle_alone_without_torch(tiny_bundle, tmp_path):
    import shutil
    import subprocess
    import sys

    from clip_onnx.export.families.ruclip import SAMPLE_TEXTS
    from clip_onnx.parity import GATE_TEMPLATES

    assert json.loads((tiny_bundle / "manifest.json").read_text())["sample_texts"] == list(SAMPLE_TEXTS)
    old = shutil.copytree(tiny_bundle, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["sample_texts"]  # as bundles exported before the manifest recorded them
    (old / "manifest.json").write_text(json.dumps(manifest))
    script = (
        "import sys\n"
        "for name in ('torch', 'onnx', 'youtokentome'): sys.modules[name] = None\n"
        "from clip_onnx.bundle import read_bundle\n"
        "from clip_onnx.export.engine_gate import gate_feeds\nfrom clip_onnx.gate_feeds import FALLBACK_TEXTS\n"
        "for path in sys.argv[1:]:\n"
        "    feeds = gate_feeds(read_bundle(path), images=20)\n"
        "    print(sum(len(f['pixel_values']) for f in feeds['visual']),"
        " sum(len(f['input_ids']) for f in feeds['textual']),"
        " min(f['input_ids'].shape[1] for f in feeds['textual']), len(FALLBACK_TEXTS))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tiny_bundle), str(old)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [[int(x) for x in line.split()] for line in done.stdout.splitlines()]
    (images, texts, shortest, fallback), (_, old_texts, _, _) = lines
    assert images == 20 and texts == len(GATE_TEMPLATES) * len(SAMPLE_TEXTS)
    assert shortest < 77  # batches cut to their longest prompt, as ClipModel runs the text graph
    assert old_texts == len(GATE_TEMPLATES) * fallback


def test_engine_gate_runs_within_the_profile_and_compares_with_the_onnx_graph(tiny_bundle):
    """ONNX Runtime stands in for the plan (no GPU here): the same graph passes, with batches topped up to min."""
    from clip_onnx.bundle import read_bundle
    from clip_onnx.export.engine_gate import EngineGate
    from clip_onnx.runtime.backends.onnxruntime import OnnxRuntimeRunner

    gate = EngineGate(read_bundle(tiny_bundle), images=36)
    for tower in ("visual", "textual"):
        with OnnxRuntimeRunner(tiny_bundle / f"{tower}.onnx") as runner:
            # The last text batch holds 2 prompts, below min batch 4; 16-item batches exceed max batch 8.
            record = gate.check(tower, runner, Profile(4, 4, 8)).to_dict()
        assert record["stage"] == f"tensorrt[{tower}]" and record["passed"] and record["top1_agreement"] == 1.0
        assert record["images"] == 36 and [r["batch"] for r in record["rows"]] == [36, 50]
        assert min(r["min_cosine"] for r in record["rows"]) > 0.99999


@pytest.mark.skipif(not _gpu_tensorrt_available(), reason="needs a CUDA GPU with tensorrt and cupy")
def test_build_engine_gates_each_plan_and_records_the_figures(tiny_bundle, tmp_path):
    import shutil

    from clip_onnx.export.tensorrt import build_engines

    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    built = build_engines(bundle, Profile(1, 4, 8), gate_images=64)
    for record in built:
        parity = record["parity"]
        assert parity["stage"] == f"tensorrt[{record['tower']}]" and parity["passed"] and parity["images"] == 64
        assert parity["thresholds"]["min_cosine"] == 0.999
        assert json.loads((bundle / "engines" / f"{record['tower']}-{record['key']}.json").read_text()) == record
    assert build_engines(bundle, Profile(1, 4, 8), gate_images=64) == built  # reused, figures kept
