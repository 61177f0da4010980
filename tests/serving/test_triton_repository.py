"""`clip-onnx triton` without a server: the configs, files, modes and refusals of the written repository.

tests/serving/test_triton_server.py serves what this writes from a real Triton server.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clip_onnx.bundle import read_bundle
from clip_onnx.cli import cli
from clip_onnx.engines import Profile, Target, write_record
from clip_onnx.errors import BundleError, InputError
from clip_onnx.files import sha256_bytes, sha256_file
from clip_onnx.runtime import ClipModel
from clip_onnx.triton.config import ServingOptions, parse
from clip_onnx.triton.models import model_prefix
from clip_onnx.triton.steps import decode_texts, open_step
from tests.serving.triton_support import RUSSIAN_TEXTS, encoded_pictures, huge_png, to_external_data

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")

CLIP_MODELS = {
    "demo_visual",
    "demo_textual",
    "demo_preprocess",
    "demo_tokenize",
    "demo_normalize",
    "demo_image",
    "demo_text",
}


def _triton(*args) -> object:
    return CliRunner().invoke(cli, ["triton", *map(str, args)])


def _configs(repo: Path) -> dict:
    return {d.name: parse((d / "config.pbtxt").read_text(encoding="utf-8")) for d in repo.iterdir()}


def _tensors(field) -> dict:
    return {t.name: (pb.DataType.Name(t.data_type), list(t.dims)) for t in field}


@pytest.fixture(scope="module")
def repo(demo_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "models"
    result = _triton(
        demo_bundle,
        "-o",
        out,
        "--name",
        "demo",
        "--max-batch",
        16,
        "--instances",
        2,
        "--step-instances",
        3,
        "--queue-delay-us",
        500,
    )
    assert result.exit_code == 0, result.output
    return out


def test_every_config_parses_with_tritons_schema_and_names_its_directory(repo):
    configs = _configs(repo)
    assert set(configs) == CLIP_MODELS
    for name, config in configs.items():
        assert config.name == name and config.max_batch_size == 16
        assert sorted(p.name for p in (repo / name).iterdir()) == ["1", "config.pbtxt"]


def test_ensembles_keep_the_public_contract_and_dims_match_the_manifest(repo, demo_bundle):
    manifest = read_bundle(demo_bundle).manifest.to_dict()
    configs = _configs(repo)
    dim, size = manifest["embed_dim"], manifest["preprocess"]["image_size"]
    context = manifest["tokenizer"]["context_length"]
    assert configs["demo_image"].platform == configs["demo_text"].platform == "ensemble"
    assert _tensors(configs["demo_image"].input) == {"IMAGE": ("TYPE_STRING", [1])}
    assert _tensors(configs["demo_text"].input) == {"TEXT": ("TYPE_STRING", [1])}
    assert _tensors(configs["demo_image"].output) == {"EMBEDDING": ("TYPE_FP32", [dim])}
    assert _tensors(configs["demo_text"].output) == {"EMBEDDING": ("TYPE_FP32", [dim]), "TOKENS": ("TYPE_INT32", [1])}
    visual, textual = manifest["graphs"]["visual"], manifest["graphs"]["textual"]
    assert _tensors(configs["demo_visual"].input) == {visual["inputs"][0]: ("TYPE_FP32", [3, size, size])}
    assert _tensors(configs["demo_visual"].output) == {visual["output"]: ("TYPE_FP32", [dim])}
    # The graph's sequence axis is symbolic; the tokenizer step pads every text to the full context.
    assert _tensors(configs["demo_textual"].input) == {textual["inputs"][0]: ("TYPE_INT64", [-1])}
    assert _tensors(configs["demo_tokenize"].output) == {
        textual["inputs"][0]: ("TYPE_INT64", [context]),
        "TOKENS": ("TYPE_INT32", [1]),
    }
    assert _tensors(configs["demo_preprocess"].output) == {visual["inputs"][0]: ("TYPE_FP32", [3, size, size])}
    steps = [[s.model_name for s in configs[e].ensemble_scheduling.step] for e in ("demo_image", "demo_text")]
    assert steps == [
        ["demo_preprocess", "demo_visual", "demo_normalize"],
        ["demo_tokenize", "demo_textual", "demo_normalize"],
    ]


def test_only_graph_models_wait_to_fill_a_batch_and_steps_scale_on_their_own(repo):
    configs = _configs(repo)
    for name in ("demo_visual", "demo_textual"):
        config = configs[name]
        assert config.platform == "onnxruntime_onnx" and not config.backend
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        assert [(g.count, g.kind) for g in config.instance_group] == [(2, pb.ModelInstanceGroup.KIND_CPU)]
    for name in ("demo_preprocess", "demo_tokenize"):
        assert configs[name].backend == "python"
        assert configs[name].parameters["clip_onnx_step"].string_value == name.removeprefix("demo_")
        assert configs[name].dynamic_batching.max_queue_delay_microseconds == 0
        assert [(g.count, g.kind) for g in configs[name].instance_group] == [(3, pb.ModelInstanceGroup.KIND_CPU)]
    # No Python after the graph: the normalisation is an ONNX graph model that never waits.
    normalize = configs["demo_normalize"]
    assert normalize.platform == "onnxruntime_onnx" and not normalize.backend
    assert normalize.dynamic_batching.max_queue_delay_microseconds == 0
    assert _tensors(normalize.input) == {"UNNORMALIZED": ("TYPE_FP32", [64])}
    assert _tensors(normalize.output) == {"EMBEDDING": ("TYPE_FP32", [64])}


def test_the_normalize_graph_equals_clip_models_normalisation(repo, demo_bundle):
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(repo / "demo_normalize" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    model = ClipModel.load(demo_bundle)
    pictures = encoded_pictures()
    raw = model.encode_image(pictures, normalize=False)
    served = session.run(["EMBEDDING"], {"UNNORMALIZED": raw})[0]
    assert np.abs(served - model.encode_image(pictures)).max() <= 1e-6
    wide = np.random.default_rng(0).standard_normal((5, 1024), dtype=np.float32) * 50
    expected = wide / np.linalg.norm(wide, axis=-1, keepdims=True)
    assert np.abs(session.run(["EMBEDDING"], {"UNNORMALIZED": wide})[0] - expected).max() <= 1e-6


def test_graph_files_are_the_bundles_own_bytes_hardlinked(repo, demo_bundle):
    manifest = read_bundle(demo_bundle).manifest.to_dict()
    for tower in ("visual", "textual"):
        served = repo / f"demo_{tower}" / "1" / "model.onnx"
        source = demo_bundle / manifest["graphs"][tower]["file"]
        assert sha256_file(served) == manifest["files"][source.name]["sha256"]
        assert served.stat().st_ino == source.stat().st_ino
    tokenizer = manifest["tokenizer"]["file"]
    assert sha256_file(repo / "demo_tokenize" / "1" / tokenizer) == manifest["files"][tokenizer]["sha256"]
    for step in ("demo_tokenize", "demo_preprocess"):
        assert json.loads((repo / step / "1" / "manifest.json").read_text(encoding="utf-8")) == manifest


def test_every_file_is_0644_and_every_folder_0755(repo):
    for path in [repo, *repo.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


def test_a_private_bundle_file_is_copied_not_relinked_and_keeps_its_mode(demo_bundle, tmp_path):
    bundle = tmp_path / "private"
    shutil.copytree(demo_bundle, bundle)
    (bundle / "visual.onnx").chmod(0o600)
    assert _triton(bundle, "-o", tmp_path / "repo").exit_code == 0
    served = tmp_path / "repo" / "private_visual" / "1" / "model.onnx"
    assert served.stat().st_ino != (bundle / "visual.onnx").stat().st_ino
    assert stat.S_IMODE(served.stat().st_mode) == 0o644
    assert stat.S_IMODE((bundle / "visual.onnx").stat().st_mode) == 0o600
    assert sha256_file(served) == sha256_file(bundle / "visual.onnx")


def test_external_data_graph_goes_in_tritons_directory_form(demo_bundle, tmp_path):
    bundle = to_external_data(demo_bundle, tmp_path / "ext-demo", towers=("visual",))
    result = _triton(bundle, "-o", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "repo" / "ext_demo_visual" / "1" / "model.onnx"
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "visual.onnx.data"]
    manifest = read_bundle(bundle).manifest.to_dict()
    assert sha256_file(folder / "model.onnx") == manifest["files"]["visual.onnx"]["sha256"]
    assert sha256_file(folder / "visual.onnx.data") == manifest["files"]["visual.onnx.data"]["sha256"]
    import onnxruntime as ort

    # The data resolves beside the served graph: the same embeddings as the bundle itself gives.
    pixels = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    served = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    original = ort.InferenceSession(str(demo_bundle / "visual.onnx"), providers=["CPUExecutionProvider"])
    feed = {"pixel_values": pixels}
    assert np.array_equal(served.run(None, feed)[0], original.run(None, feed)[0])


def _batch(items) -> np.ndarray:
    return np.array(items, dtype=object).reshape(-1, 1)


def test_steps_read_from_the_written_version_folders_reproduce_clip_model(repo, demo_bundle):
    model = ClipModel.load(demo_bundle)
    tokenize = open_step("tokenize", repo / "demo_tokenize" / "1", ["input_ids"])
    (tokens,) = tokenize([_batch([t.encode() for t in RUSSIAN_TEXTS])])
    assert np.array_equal(tokens["input_ids"], model.tokenize(RUSSIAN_TEXTS)["input_ids"])
    preprocess = open_step("preprocess", repo / "demo_preprocess" / "1", ["pixel_values"])
    pictures = encoded_pictures()
    (pixels,) = preprocess([_batch(pictures)])
    assert np.array_equal(pixels["pixel_values"], model.preprocess(pictures))


def test_server_side_steps_import_neither_torch_nor_the_writers_dependencies(repo, python_repo):
    # The server's Python has only `pip install clip-onnx`: no torch, and no tritonclient or protobuf.
    script = textwrap.dedent(f"""
        import sys
        from clip_onnx.triton.steps import open_step
        open_step("tokenize", {str(repo / "demo_tokenize" / "1")!r}, ["input_ids"])
        open_step("preprocess", {str(repo / "demo_preprocess" / "1")!r}, ["pixel_values"])
        open_step("image", {str(python_repo / "demo_image" / "1")!r}, ["EMBEDDING"], {{"threads": "1"}})
        heavy = ("torch", "onnx", "youtokentome", "tritonclient", "google.protobuf", "grpc")
        print(",".join(x for x in heavy if x in sys.modules) or "clean")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "clean"


def test_steps_refuse_bad_items_with_the_runtimes_input_error_for_their_own_request(repo):
    preprocess = open_step("preprocess", repo / "demo_preprocess" / "1", ["pixel_values"])
    good = encoded_pictures()[0]
    bad, ok, huge = preprocess([_batch([good, b"\x00abcd"]), _batch([good]), _batch([huge_png()])])
    assert isinstance(bad, InputError) and "image #1: cannot decode image bytes of length 5" in str(bad)
    assert ok["pixel_values"].shape == (1, 3, 64, 64)
    assert isinstance(huge, InputError) and re.search(r"image #0: refusing .* too large to decode safely", str(huge))
    with pytest.raises(InputError, match=r"text #1 is not valid UTF-8: byte b'\\xff' at position 3"):
        decode_texts(np.array([["ок".encode()], [b"abc\xff"]], dtype=object))


def test_a_changed_tokenizer_copy_is_refused_at_load(repo, tmp_path):
    version = tmp_path / "1"
    shutil.copytree(repo / "demo_tokenize" / "1", version)
    with open(version / "bpe.model", "ab") as f:
        f.write(b"\n")
    with pytest.raises(BundleError, match="sha256 does not match the manifest"):
        open_step("tokenize", version, ["input_ids"])


def test_existing_models_are_replaced_only_with_overwrite_and_others_are_kept(demo_bundle, tmp_path):
    repo = tmp_path / "repo"
    (repo / "someone_elses_model" / "1").mkdir(parents=True)
    assert _triton(demo_bundle, "-o", repo, "--name", "demo").exit_code == 0
    before = (repo / "demo_visual" / "config.pbtxt").read_text(encoding="utf-8")
    refused = _triton(demo_bundle, "-o", repo, "--name", "demo", "--max-batch", 8)
    assert refused.exit_code == 1 and "already has the models" in refused.output and "--overwrite" in refused.output
    assert (repo / "demo_visual" / "config.pbtxt").read_text(encoding="utf-8") == before
    assert _triton(demo_bundle, "-o", repo, "--name", "demo", "--max-batch", 8, "--overwrite").exit_code == 0
    assert parse((repo / "demo_visual" / "config.pbtxt").read_text(encoding="utf-8")).max_batch_size == 8
    assert (repo / "someone_elses_model" / "1").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no staging or trash left behind


def test_a_tampered_bundle_writes_nothing(demo_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    data = bytearray((bundle / "textual.onnx").read_bytes())
    data[-1] ^= 1
    (bundle / "textual.onnx").write_bytes(bytes(data))
    result = _triton(bundle, "-o", tmp_path / "repo")
    assert result.exit_code == 1 and "sha256 does not match" in result.output
    assert not (tmp_path / "repo").exists()


def test_names_and_options_are_checked(demo_bundle, tmp_path):
    assert model_prefix(Path("/x/ruclip-base.v1"), None) == "ruclip_base_v1"
    bad_name = _triton(demo_bundle, "-o", tmp_path / "r", "--name", "my-model")
    assert bad_name.exit_code == 1 and "--name 'my-model' may hold only" in bad_name.output
    with pytest.raises(InputError, match="max-batch must be an int >= 1, got 0"):
        ServingOptions(max_batch=0)
    with pytest.raises(InputError, match="kind must be one of"):
        ServingOptions(kind="tpu")
    cpu_engines = _triton(demo_bundle, "-o", tmp_path / "r", "--engines")
    assert cpu_engines.exit_code == 1 and "add --kind gpu" in cpu_engines.output
    assert not (tmp_path / "r").exists()


def _plan(bundle: Path, tower: str, profile: Profile, product: str = "tensorrt") -> bytes:
    """A plan record as `clip-onnx build-engine` writes it; the writer only hashes and links the plan's bytes."""
    manifest = read_bundle(bundle).manifest.to_dict()
    graph_sha = manifest["files"][manifest["graphs"][tower]["file"]]["sha256"]
    plan = f"not a real plan: {tower} {profile}".encode()
    key = sha256_bytes(plan)[:20]
    (bundle / "engines").mkdir(exist_ok=True)
    (bundle / "engines" / f"{tower}-{key}.plan").write_bytes(plan)
    write_record(
        bundle,
        tower,
        key,
        {
            "key": key,
            "tower": tower,
            "graph_sha256": graph_sha,
            "target": asdict(Target(product, "10.13.0", "NVIDIA L4", "8.9")),
            "profile": asdict(profile),
            "fp16": "none",
            "plan": f"{tower}-{key}.plan",
            "plan_sha256": sha256_bytes(plan),
            "plan_bytes": len(plan),
        },
    )
    return plan


def test_engines_serve_plans_within_their_profile_and_refuse_beyond_it(demo_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    plan = _plan(bundle, "visual", Profile(1, 8, 16))
    too_big = _triton(bundle, "-o", tmp_path / "r", "--kind", "gpu", "--engines", "--max-batch", 32)
    assert too_big.exit_code == 1 and "--max-batch 32 exceeds the visual plan's profile (max batch 16" in too_big.output
    ok = _triton(bundle, "-o", tmp_path / "r", "--kind", "gpu", "--engines", "--max-batch", 16)
    assert ok.exit_code == 0, ok.output
    configs = _configs(tmp_path / "r")
    assert configs["bundle_visual"].platform == "tensorrt_plan"
    assert (tmp_path / "r" / "bundle_visual" / "1" / "model.plan").read_bytes() == plan
    # No textual plan: that tower stays on ONNX Runtime, on the GPU instances asked for.
    assert configs["bundle_textual"].platform == "onnxruntime_onnx"
    assert configs["bundle_textual"].instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert configs["bundle_tokenize"].instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU


def test_engines_refuse_a_text_profile_short_of_the_context_and_ambiguous_plans(demo_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    _plan(bundle, "textual", Profile(1, 8, 32, min_seq=1, opt_seq=16, max_seq=32))
    short = _triton(bundle, "-o", tmp_path / "r", "--kind", "gpu", "--engines")
    assert short.exit_code == 1 and "takes sequences of 1..32 tokens, Triton sends 77" in short.output
    _plan(bundle, "visual", Profile(1, 8, 32))
    _plan(bundle, "visual", Profile(1, 4, 32))
    twice = _triton(bundle, "-o", tmp_path / "r", "--kind", "gpu", "--engines")
    assert twice.exit_code == 1 and "2 TensorRT plans for the visual graph" in twice.output
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def python_repo(demo_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton-python") / "models"
    result = _triton(
        demo_bundle,
        "-o",
        out,
        "--name",
        "demo",
        "--layout",
        "python",
        "--instances",
        2,
        "--threads",
        1,
        "--max-batch",
        8,
    )
    assert result.exit_code == 0, result.output
    return out


def test_python_layout_is_one_python_model_per_endpoint_carrying_the_bundle(python_repo, demo_bundle):
    configs = _configs(python_repo)
    assert set(configs) == {"demo_image", "demo_text"}
    manifest = read_bundle(demo_bundle).manifest.to_dict()
    for name, source in (("demo_image", "IMAGE"), ("demo_text", "TEXT")):
        config = configs[name]
        assert config.backend == "python" and config.max_batch_size == 8
        assert _tensors(config.input) == {source: ("TYPE_STRING", [1])}
        tokens = {"TOKENS": ("TYPE_INT32", [1])} if source == "TEXT" else {}
        assert _tensors(config.output) == {"EMBEDDING": ("TYPE_FP32", [manifest["embed_dim"]]), **tokens}
        assert config.parameters["clip_onnx_step"].string_value == name.removeprefix("demo_")
        assert config.parameters["clip_onnx_threads"].string_value == "1"
        assert "clip_onnx_bundle" not in config.parameters  # the bundle is in the version folder
        assert config.dynamic_batching.max_queue_delay_microseconds == 0
        assert [(g.count, g.kind) for g in config.instance_group] == [(2, pb.ModelInstanceGroup.KIND_CPU)]
        carried = python_repo / name / "1" / "bundle"
        carried_files = sorted(p.relative_to(carried).as_posix() for p in carried.rglob("*") if p.is_file())
        assert carried_files == sorted([*manifest["files"], "manifest.json"])
        for file in manifest["files"]:
            assert (carried / file).stat().st_ino == (demo_bundle / file).stat().st_ino


def test_python_layout_models_equal_clip_model_and_fail_only_the_bad_request(python_repo, demo_bundle):
    model = ClipModel.load(demo_bundle)
    pictures = encoded_pictures()
    image = open_step("image", python_repo / "demo_image" / "1", ["EMBEDDING"], {"threads": "1", "max_batch": 8})
    first, bad, second = image([_batch(pictures[:2]), _batch([pictures[2], b"junk"]), _batch(pictures[3:])])
    assert isinstance(bad, InputError) and "image #1: cannot decode image bytes of length 4" in str(bad)
    assert [len(first["EMBEDDING"]), len(second["EMBEDDING"])] == [2, len(pictures) - 3]  # each its own rows
    served = np.concatenate([first["EMBEDDING"], second["EMBEDDING"]])
    assert np.abs(served - model.encode_image(pictures[:2] + pictures[3:])).max() <= 1e-6
    outputs = ["EMBEDDING", "TOKENS"]
    text = open_step("text", python_repo / "demo_text" / "1", outputs, {"threads": "1", "max_batch": 8})
    texts = RUSSIAN_TEXTS
    results = text(
        [_batch([t.encode() for t in texts[:3]]), _batch([b"\xff"]), _batch([t.encode() for t in texts[3:]])]
    )
    assert isinstance(results[1], InputError) and "text #0 is not valid UTF-8" in str(results[1])
    assert [len(results[i][name]) for i in (0, 2) for name in outputs] == [3, 3, len(texts) - 3, len(texts) - 3]
    served = np.concatenate([results[0]["EMBEDDING"], results[2]["EMBEDDING"]])
    # Alone or batched with other requests: the same embedding as ClipModel's, one text at a time.
    expected = np.concatenate([model.encode_text([t]) for t in texts])
    assert np.abs(served - expected).max() <= 1e-6
    # TOKENS: the ids the graph is fed up to each row's end id (the demo tokenizer pads with 0 after it).
    ids = model.tokenize(texts)["input_ids"]
    seen = [int(np.flatnonzero(row).max()) + 1 for row in ids]
    tokens = np.concatenate([results[0]["TOKENS"], results[2]["TOKENS"]])
    assert tokens.dtype == np.int32 and tokens.reshape(-1).tolist() == seen
    assert seen[3] == 2 and seen[-1] == ids.shape[1]  # "" is its start and end ids; the long text is cut


def test_python_layout_for_serve_opens_the_bundle_where_it_is(demo_bundle, tmp_path):
    from clip_onnx.triton import ServingOptions, write_repository

    options = ServingOptions(layout="python")
    models = write_repository(demo_bundle, tmp_path / "repo", name="demo", options=options, embed_bundle=False)
    for model in models:
        assert model.config.parameters["clip_onnx_bundle"].string_value == str(demo_bundle.absolute())
        assert sorted(p.name for p in (tmp_path / "repo" / model.name / "1").iterdir()) == ["model.py"]


def test_python_layout_copies_a_private_bundle_once_and_links_the_copy(demo_bundle, tmp_path):
    bundle = tmp_path / "private"
    shutil.copytree(demo_bundle, bundle)
    (bundle / "visual.onnx").chmod(0o600)
    assert _triton(bundle, "-o", tmp_path / "repo", "--layout", "python").exit_code == 0
    image, text = (tmp_path / "repo" / f"private_{m}" / "1" / "bundle" / "visual.onnx" for m in ("image", "text"))
    assert image.stat().st_ino == text.stat().st_ino != (bundle / "visual.onnx").stat().st_ino
    assert stat.S_IMODE(image.stat().st_mode) == 0o644 and sha256_file(image) == sha256_file(bundle / "visual.onnx")


def test_python_layout_refuses_gpu_instances_and_plans(demo_bundle, tmp_path):
    gpu = _triton(demo_bundle, "-o", tmp_path / "r", "--layout", "python", "--kind", "gpu")
    assert gpu.exit_code == 1 and "for GPU instances use --layout ensemble" in gpu.output
    plans = _triton(demo_bundle, "-o", tmp_path / "r", "--layout", "python", "--engines")
    assert plans.exit_code == 1 and "--engines" in plans.output
    assert not (tmp_path / "r").exists()


def test_the_closing_hint_gives_commands_that_serve_the_repository(demo_bundle, tmp_path):
    result = _triton(demo_bundle, "-o", tmp_path / "my models", "--name", "demo")
    assert result.exit_code == 0, result.output
    docker = next(line for line in result.output.splitlines() if "docker run" in line)
    assert f"-v '{tmp_path / 'my models'}':/models nvcr.io/nvidia/tritonserver:24.10-py3" in docker
    assert "tritonserver --model-repository=/models --pinned-memory-pool-byte-size=0" in docker
    assert "--gpus" not in docker and "numpy<2" in docker
    assert f"clip-onnx serve {demo_bundle}" in result.output
    gpu = _triton(demo_bundle, "-o", tmp_path / "gpu", "--name", "demo", "--kind", "gpu")
    assert "docker run --rm --gpus all" in gpu.output


def test_the_packaged_normalize_graph_is_the_one_node_graph_it_says():
    # How the asset was made (the triton package itself may not import onnx): rebuilt here, byte for byte.
    import onnx
    from onnx import TensorProto, helper

    from clip_onnx.triton.models import NORMALIZE_GRAPH

    def value(name):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "dim"])

    node = helper.make_node("LpNormalization", ["UNNORMALIZED"], ["EMBEDDING"], axis=-1, p=2)
    graph = helper.make_graph([node], "l2_normalize", [value("UNNORMALIZED")], [value("EMBEDDING")])
    opset = [helper.make_opsetid("", 13)]
    model = helper.make_model(graph, opset_imports=opset, producer_name="clip-onnx", ir_version=8)
    onnx.checker.check_model(model)
    assert NORMALIZE_GRAPH.read_bytes() == model.SerializeToString()


def test_a_request_the_graph_refuses_fails_alone_in_a_merged_execution(demo_bundle):
    from clip_onnx.triton.steps import EncodeTexts

    class Picky(EncodeTexts):
        # Today nothing decodable is refused after decoding; a future refusal must still spare batch-mates.
        def run(self, prepared):
            if any("boom" in text for texts in prepared for text in texts):
                raise InputError("text 'boom' refused by the graph's feed")
            return super().run(prepared)

    model = ClipModel.load(demo_bundle, towers=("textual",))
    step = Picky(model, ["EMBEDDING"])
    first, bad, last = step([_batch([b"circle"]), _batch([b"boom"]), _batch([b"square", b"star"])])
    assert isinstance(bad, InputError) and "refused by the graph's feed" in str(bad)
    assert np.abs(first["EMBEDDING"] - model.encode_text(["circle"])).max() <= 1e-6
    assert np.abs(last["EMBEDDING"] - model.encode_text(["square", "star"])).max() <= 1e-6
