"""TensorRT: the plan bookkeeping (no GPU needed), an ahead-of-time SM89 build with TensorRT-RTX on the CPU,
and the GPU execution path where a GPU and TensorRT exist."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clip_onnx.engines import Profile, Target, chunks, plan_key, records, select_plan, write_record
from clip_onnx.errors import BackendError, InputError, ParityError
from clip_onnx.thresholds import THRESHOLDS
from tests.skip_rule import tensorrt_missing

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
    """In a fresh process where tensorrt and cupy cannot be imported, installed here or not."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['tensorrt'] = sys.modules['cupy'] = None\n"
        "from clip_onnx.errors import BackendError\n"
        "from clip_onnx.runtime import ClipModel\n"
        "try:\n"
        "    ClipModel.load(sys.argv[1], backend='tensorrt')\n"
        "except BackendError as exc:\n"
        "    print(exc)\n"
        "print(ClipModel.load(sys.argv[1], backend='auto').encode_text(['кот']).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tiny_bundle)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    error, shape = done.stdout.splitlines()
    assert "pip install 'clip-onnx[tensorrt]'" in error and shape == "(1, 32)"


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


# Plans run only on a GPU with tensorrt and cupy; elsewhere these skip with an allowed reason (tests/skip_rule.py).
needs_gpu_tensorrt = pytest.mark.skipif(tensorrt_missing() is not None, reason=str(tensorrt_missing()))


@needs_gpu_tensorrt
def test_tensorrt_backend_matches_the_fp32_graph_on_gpu(tiny_bundle, tmp_path):
    """Through ClipModel on the plans, against the fp32 graph in a plain ONNX Runtime session and NumPy."""
    import shutil

    import onnxruntime as ort

    from clip_onnx.export.tensorrt import build_engines
    from clip_onnx.runtime import ClipModel

    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    build_engines(bundle, Profile(1, 4, 8))
    texts = [f"текст {i}" for i in range(19)]  # more than max_batch: chunked
    model = ClipModel.load(bundle, backend="tensorrt")
    got = model.encode_text(texts)
    session = ort.InferenceSession(str(bundle / "textual.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, dict(model.tokenize(texts)))
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.sum(got * expected, axis=1).min() >= THRESHOLDS["engine"].min_cosine


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


def _graph_with(bundle, tower: str, out, change) -> Path:
    """``tower``'s graph of ``bundle`` written to ``out`` with ``change`` applied to every weight matrix."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(bundle / f"{tower}.onnx")
    for init in model.graph.initializer:
        # The causal mask is a constant of the text graph, not a weight: changing it changes the model's rules.
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2 and "attn_mask" not in init.name:
            init.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(init)), init.name))
    onnx.save(model, out)
    return out


def _noise(relative: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    return lambda w: (w + rng.normal(0, relative * w.std(), w.shape)).astype(np.float32)


def _other_weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    return lambda w: rng.permutation(w.ravel()).reshape(w.shape)  # the same values, other weights


class _Recording:
    """A candidate plan's stand-in: ONNX Runtime on another graph, recording the batch of every run it gets."""

    def __init__(self, graph):
        from clip_onnx.runtime.backends.onnxruntime import OnnxRuntimeRunner

        self.runner = OnnxRuntimeRunner(graph)
        self.batches = []

    def infer(self, feed):
        self.batches.append(len(next(iter(feed.values()))))
        return self.runner.infer(feed)


@pytest.fixture(scope="module")
def demo_gate(demo_bundle):
    from clip_onnx.bundle import read_bundle
    from clip_onnx.export.engine_gate import EngineGate

    return EngineGate(read_bundle(demo_bundle), images=36)


def _raw_cosine(graph, reference_graph, feeds) -> float:
    """The lowest cosine between two graphs' outputs on ``feeds``, from plain InferenceSessions and NumPy."""
    import onnxruntime as ort

    outputs = []
    for path in (graph, reference_graph):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(np.concatenate([session.run(None, dict(feed))[0] for feed in feeds]).astype(np.float64))
    got, ref = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in outputs)
    return float(np.sum(got * ref, axis=1).min())


@pytest.mark.parametrize("tower", ["visual", "textual"])
def test_engine_gate_passes_an_fp16_candidate_fed_within_the_profile(demo_bundle, demo_gate, tower, tmp_path):
    """A plan's numerics without a GPU: the fp16 graph (what an FP16 engine computes) in place of the plan."""
    from clip_onnx.export.engine_gate import gate_feeds
    from clip_onnx.export.fp16 import fp16_converter

    candidate = tmp_path / f"{tower}.fp16.onnx"
    fp16_converter(("LayerNormalization",))(demo_bundle / f"{tower}.onnx", candidate)
    plan = _Recording(candidate)
    # 16-item gate batches exceed max batch 8; the last picture batch holds 4, below min batch 6.
    record = demo_gate.check(tower, plan, Profile(6, 8, 8)).to_dict()
    assert set(plan.batches) == ({6, 8} if tower == "visual" else {8}), plan.batches
    assert record["stage"] == f"tensorrt[{tower}]" and record["passed"] and record["images"] == 36
    assert [r["batch"] for r in record["rows"]] == [36, 40]  # 8 sample texts in 5 templates
    (row,) = [r for r in record["rows"] if r["tower"] == tower]
    (untouched,) = [r for r in record["rows"] if r["tower"] != tower]
    # Not a graph against itself: fp16 moves every vector a little, within the engine gate...
    expected = _raw_cosine(candidate, demo_bundle / f"{tower}.onnx", gate_feeds(demo_gate.bundle, 36)[tower])
    assert 0.999 <= expected < 0.9999999 and row["min_cosine"] == pytest.approx(expected, abs=1e-7)
    assert row["max_abs"] > 0 and untouched["max_abs"] == 0.0


@pytest.mark.parametrize("tower", ["visual", "textual"])
@pytest.mark.parametrize("candidate", ["other weights", "perturbed"])
def test_engine_gate_refuses_a_wrong_plan_naming_the_tower(demo_bundle, demo_gate, tower, candidate, tmp_path):
    change = _other_weights() if candidate == "other weights" else _noise(0.03)
    plan = _Recording(_graph_with(demo_bundle, tower, tmp_path / f"{tower}.onnx", change))
    with pytest.raises(ParityError, match=rf"tensorrt\[{tower}\] {tower} batch \d+: cosine -?\d\.\d+ < 0\.999") as err:
        demo_gate.check(tower, plan, Profile(1, 8, 16))
    report = err.value.report
    assert report.stage == f"tensorrt[{tower}]"
    assert all(tower in line for line in err.value.failures), err.value.failures


def test_engine_gate_tells_a_barely_perturbed_plan_from_a_perturbed_one(demo_bundle, demo_gate, tmp_path):
    """The threshold is where it says: noise well under it passes, noise over it fails."""
    from clip_onnx.export.engine_gate import gate_feeds

    feeds = gate_feeds(demo_gate.bundle, 36)["visual"]
    for relative, passes in ((0.001, True), (0.03, False)):
        graph = _graph_with(demo_bundle, "visual", tmp_path / f"v{relative}.onnx", _noise(relative))
        cosine = _raw_cosine(graph, demo_bundle / "visual.onnx", feeds)
        assert (cosine >= 0.999) == passes, (relative, cosine)
        if passes:
            row = demo_gate.check("visual", _Recording(graph), Profile(1, 8, 16)).rows[0]
            assert row.min_cosine == pytest.approx(cosine, abs=1e-7) and row.min_cosine < 1
        else:
            with pytest.raises(ParityError):
                demo_gate.check("visual", _Recording(graph), Profile(1, 8, 16))


def test_a_plan_that_misses_the_gate_is_deleted_with_its_record(demo_bundle, demo_gate, tmp_path, monkeypatch):
    """build-engine's handling of a failed gate, with ONNX Runtime on a perturbed graph in TensorRT's place."""
    from clip_onnx.export import tensorrt as builder
    from clip_onnx.runtime.backends import tensorrt as backend

    graph = _graph_with(demo_bundle, "textual", tmp_path / "textual.onnx", _noise(0.1))
    monkeypatch.setattr(backend, "TensorRTRunner", lambda plan, record: _Recording(graph).runner)
    plan = tmp_path / "textual-k.plan"
    plan.write_bytes(b"plan")
    plan.with_suffix(".json").write_text("{}")
    with pytest.raises(ParityError, match=r"tensorrt\[textual\]"):
        builder._gated(demo_gate, "textual", plan, {"key": "k"}, Profile(1, 8, 16))
    assert not plan.exists() and not plan.with_suffix(".json").exists()


@needs_gpu_tensorrt
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
