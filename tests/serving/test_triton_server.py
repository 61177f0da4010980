"""A real Triton server (2.51, from the nvidia-pytriton wheel) serving what `clip-onnx triton` writes.

The server runs from .venv-triton (scripts/triton-venv.sh: numpy<2 and clip-onnx
runtime-only, as in a Triton container with `pip install clip-onnx`).  Its
Python backend is the real one, and so is everything of the python layout.
The ensemble layout's ``onnxruntime_onnx`` graph models run on a TEST STAND-IN
for Triton's C++ ONNX Runtime backend, which no pip package ships:
tests/serving/triton_stand_in/onnxruntime/model.py, a Python-based backend of the same
name.  The real backend is verified only in the stock Triton image.

The stub's embedded Python ignores PYTHONPATH: it runs the clip_onnx installed
in the server venv (in CI, this checkout; CLIP_ONNX_TRITON_VENV picks another venv).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clip_onnx.cli import cli
from clip_onnx.runtime import ClipClassifier, ClipModel
from clip_onnx.triton.config import parse, render
from tests.serving.triton_support import (
    RUSSIAN_TEXTS,
    classifier_bundle,
    encoded_pictures,
    huge_png,
    slow_picture,
    to_external_data,
)

http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.triton

ROOT = Path(__file__).resolve().parents[2]
SERVER_VENV = Path(os.environ.get("CLIP_ONNX_TRITON_VENV", ROOT / ".venv-triton"))
STAND_IN = Path(__file__).with_name("triton_stand_in") / "onnxruntime" / "model.py"
# Long enough that requests sent together on a busy 2-core machine still meet in one batch.
QUEUE_DELAY_US = 50_000
DEMO_MODELS = [
    "demo_visual",
    "demo_textual",
    "demo_preprocess",
    "demo_tokenize",
    "demo_normalize",
    "demo_image",
    "demo_text",
]
CLS_MODELS = ["cls_visual", "cls_preprocess", "cls_classify", "clspy_classify"]
_PROBE = """
import json, os, sys, sysconfig, numpy, pytriton
tritonserver = os.path.join(os.path.dirname(pytriton.__file__), "tritonserver")
print(json.dumps({"tritonserver": tritonserver, "libdir": sysconfig.get_config_var("LIBDIR"),
                  "libs": os.path.join(os.path.dirname(os.path.dirname(pytriton.__file__)), "nvidia_pytriton.libs"),
                  "python": "%d.%d" % sys.version_info[:2], "numpy": numpy.__version__}))
"""


def _missing(reason: str):
    # CI builds the server venv with scripts/dev-setup.sh, so there a missing one is a failure.
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the Triton tests: scripts/dev-setup.sh builds .venv-triton)")
    pytest.skip(f"{reason}; run scripts/triton-venv.sh")


@pytest.fixture(scope="module")
def server_install() -> dict:
    python = SERVER_VENV / "bin" / "python"
    if not python.is_file():
        _missing(f"no Triton server venv at {SERVER_VENV}")
    probe = subprocess.run([str(python), "-c", _PROBE], check=False, capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        _missing(f"{SERVER_VENV} has no usable nvidia-pytriton: {probe.stderr.strip()[-300:]}")
    install = json.loads(probe.stdout)
    assert install["numpy"] < "2", f"the Python backend stub needs numpy<2 in {SERVER_VENV}, it has {install['numpy']}"
    return install


def _backends(install: dict, target: Path) -> Path:
    """The real Python backend, copied (Triton refuses backend libraries that resolve outside their folder),
    beside the ONNX Runtime stand-in."""
    source = Path(install["tritonserver"])
    python = target / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy(source / "backends" / "python" / name, python / name)
    shutil.copy(source / "python_backend_stubs" / install["python"] / "triton_python_backend_stub", python)
    (target / "onnxruntime").mkdir()
    shutil.copy(STAND_IN, target / "onnxruntime" / "model.py")
    return target


@pytest.fixture(scope="module")
def bundles(server_install, request, tmp_path_factory) -> dict:
    pytest.importorskip("timm")
    # Asked for here, not as an argument: pytest would build the session-scoped bundle before
    # server_install could skip, spending half a minute on a test that cannot run.
    demo_bundle = request.getfixturevalue("demo_bundle")
    root = tmp_path_factory.mktemp("triton-bundles")
    classifier = classifier_bundle(root / "classifier")
    # The classifier's graph keeps its weights in external data: Triton's 1/model.onnx/ directory form.
    return {"demo": demo_bundle, "cls": to_external_data(classifier, root / "cls-external")}


@pytest.fixture(scope="module")
def repository(bundles, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("triton-repo") / "models"
    # The classifier twice: in the ensemble layout, and in the python layout carrying its bundle.
    for name, bundle, layout in (
        ("demo", bundles["demo"], "ensemble"),
        ("cls", bundles["cls"], "ensemble"),
        ("clspy", bundles["cls"], "python"),
    ):
        options = ["--max-batch", "16", "--queue-delay-us", str(QUEUE_DELAY_US), "--layout", layout]
        result = CliRunner().invoke(cli, ["triton", str(bundle), "-o", str(repo), "--name", name, *options])
        assert result.exit_code == 0, result.output
    assert (repo / "cls_visual" / "1" / "model.onnx" / "model.onnx").is_file()
    # A config that contradicts its graph: the stand-in must refuse it, as the real backend does.
    broken = repo / "broken_visual"
    shutil.copytree(repo / "demo_visual", broken)
    config = parse((broken / "config.pbtxt").read_text(encoding="utf-8"))
    config.name = "broken_visual"
    config.input[0].dims[:] = [3, 32, 32]
    (broken / "config.pbtxt").write_text(render(config), encoding="utf-8")
    return repo


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    grpc: str  # host:port of its gRPC endpoint, which the OpenAI frontend reaches it by

    def get(self, path: str):
        with urllib.request.urlopen(f"http://{self.url}{path}", timeout=10) as response:
            return json.loads(response.read() or b"null")

    def index(self) -> dict:
        request = urllib.request.Request(f"http://{self.url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return {m["name"]: m for m in json.loads(response.read())}

    def batch_counts(self, model: str) -> dict[int, int]:
        """Executions so far by batch size, from Triton's statistics."""
        stats = self.get(f"/v2/models/{model}/stats")["model_stats"][0]
        return {s["batch_size"]: s["compute_infer"]["count"] for s in stats["batch_stats"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(server_install, repository, tmp_path_factory):
    work = tmp_path_factory.mktemp("triton-server")
    backends = _backends(server_install, work / "backends")
    port, grpc_port = _free_port(), _free_port()
    env = dict(
        os.environ,
        PATH=f"{SERVER_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        LD_LIBRARY_PATH=os.pathsep.join(
            filter(None, [server_install["libdir"], server_install["libs"], os.environ.get("LD_LIBRARY_PATH")])
        ),
    )
    command = [
        str(Path(server_install["tritonserver"]) / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=false",
        "--http-address=127.0.0.1",
        f"--http-port={port}",
        # Our configs must stand on their own, and one refused model must not stop the others.
        "--disable-auto-complete-config",
        "--exit-on-error=false",
        "--exit-timeout-secs=10",
        f"--backend-config=python,shm-region-prefix-name=clip_onnx_test_{os.getpid()}_",
    ]
    log = work / "tritonserver.log"
    with open(log, "wb") as sink:
        # Its own session: on a hung shutdown the whole group (server and Python stubs) is killed by this pid.
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True
        )
    server = Server(f"127.0.0.1:{port}", process, log, f"127.0.0.1:{grpc_port}")
    try:
        _wait_ready(server, DEMO_MODELS + CLS_MODELS, timeout=150)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: Server, models: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(models)
    while waiting:
        if server.process.poll() is not None:
            pytest.fail(f"tritonserver exited with {server.process.returncode}:\n{_tail(server.log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"models {waiting} not READY after {timeout:.0f}s:\n{_tail(server.log)}")
        try:
            index = server.index()
            waiting = [m for m in models if index.get(m, {}).get("state") != "READY"]
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.5)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _infer(server: Server, model: str, name: str, items: list[bytes], output: str) -> np.ndarray:
    # A client per call, closed after: tritonclient's HTTP client is not for sharing between threads, and
    # a connection left open would hold the server's shutdown until its exit timeout.
    client = http.InferenceServerClient(server.url)
    try:
        tensor = http.InferInput(name, [len(items), 1], "BYTES")
        tensor.set_data_from_numpy(np.array(items, dtype=object).reshape(-1, 1))
        return client.infer(model, [tensor]).as_numpy(output)
    finally:
        client.close()


def _image(server, items):
    return _infer(server, "demo_image", "IMAGE", items, "EMBEDDING")


def _text(server, texts):
    return _infer(server, "demo_text", "TEXT", [t.encode("utf-8") for t in texts], "EMBEDDING")


@pytest.fixture(scope="module")
def demo(bundles) -> ClipModel:
    return ClipModel.load(bundles["demo"])


def test_every_model_is_ready_and_the_stand_in_refuses_a_config_that_contradicts_its_graph(server):
    index = server.index()
    assert {m: index[m]["state"] for m in DEMO_MODELS + CLS_MODELS} == dict.fromkeys(DEMO_MODELS + CLS_MODELS, "READY")
    assert index["broken_visual"]["state"] == "UNAVAILABLE"
    reason = index["broken_visual"]["reason"]
    assert "'pixel_values' has dims [3, 32, 32] in the config, [3, 64, 64] in the graph" in reason
    assert server.get("/v2")["version"] == "2.51.0"


def test_embeddings_equal_clip_model_for_mixed_pictures_and_russian_texts(server, demo):
    pictures = encoded_pictures()
    images = _image(server, pictures)
    texts = _text(server, RUSSIAN_TEXTS)
    image_diff = np.abs(images - demo.encode_image(pictures)).max()
    text_diff = np.abs(texts - demo.encode_text(RUSSIAN_TEXTS)).max()
    print(f"max abs diff vs ClipModel: images {image_diff:.2e}, texts {text_diff:.2e}")
    assert images.shape == (len(pictures), demo.embed_dim) and texts.shape == (len(RUSSIAN_TEXTS), demo.embed_dim)
    assert image_diff <= 1e-6 and text_diff <= 1e-6
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-6)
    # One at a time too: the answer must not depend on what else shares the batch.
    assert np.abs(_image(server, pictures[1:2]) - images[1:2]).max() <= 1e-6
    assert np.abs(_text(server, RUSSIAN_TEXTS[:1]) - texts[:1]).max() <= 1e-6


@pytest.mark.parametrize("model", ["cls_classify", "clspy_classify"])
def test_classifier_served_from_an_external_data_graph_equals_clip_classifier(server, bundles, model):
    pictures = encoded_pictures(seed=1)
    logits = _infer(server, model, "IMAGE", pictures, "LOGITS")
    classifier = ClipClassifier.load(bundles["cls"])
    expected = classifier.logits(pictures)
    print(f"{model} logits max abs diff vs ClipClassifier: {np.abs(logits - expected).max():.2e}")
    assert logits.shape == expected.shape and np.abs(logits - expected).max() <= 1e-5
    assert np.array_equal(logits.argmax(1), expected.argmax(1))
    # Triton's classification extension names the classes: "score:index:label".
    client = http.InferenceServerClient(server.url)
    try:
        tensor = http.InferInput("IMAGE", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array(pictures[:1], dtype=object).reshape(-1, 1))
        wanted = http.InferRequestedOutput("LOGITS", class_count=2)
        top = client.infer(model, [tensor], outputs=[wanted]).as_numpy("LOGITS")
    finally:
        client.close()
    best = classifier.predict(pictures[:1], top_k=2)
    for entry, index, label in zip(top[0], best.indices[0], best.labels[0], strict=True):
        score, got_index, got_label = entry.decode().split(":", 2)
        assert (int(got_index), got_label) == (index, label)
        assert abs(float(score) - expected[0, index]) <= 1e-4


def test_concurrent_requests_from_8_threads_are_batched(server, demo):
    pictures, texts = encoded_pictures(seed=2), RUSSIAN_TEXTS
    before = {m: server.batch_counts(m) for m in ("demo_visual", "demo_textual")}

    def one(i: int):
        return _image(server, [pictures[i % len(pictures)]])[0], _text(server, [texts[i % len(texts)]])[0]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(48)))
    want_images, want_texts = demo.encode_image(pictures), demo.encode_text(texts)
    for i, (image, text) in enumerate(results):
        assert np.abs(image - want_images[i % len(pictures)]).max() <= 1e-6
        assert np.abs(text - want_texts[i % len(texts)]).max() <= 1e-6
    for model, counts in before.items():
        after = server.batch_counts(model)
        grown = {size: n - counts.get(size, 0) for size, n in after.items() if n > counts.get(size, 0)}
        print(f"{model}: executions by batch size during the 8-thread run: {dict(sorted(grown.items()))}")
        assert sum(size * n for size, n in grown.items()) == 48
        assert any(size > 1 for size in grown), f"{model} never ran a batch > 1: {grown}"


def test_a_bad_item_fails_its_own_request_and_not_its_batch_mates(server, demo):
    good = encoded_pictures(seed=3)[:4]
    jobs = [("image", [p]) for p in good] + [
        ("image", [b"not a picture"]),
        ("image", [huge_png()]),
        ("text", [b"caf\xe9"]),
        ("text", ["синий круг".encode()]),
        ("image", [slow_picture()]),
    ]
    before = server.batch_counts("demo_preprocess")
    start = threading.Barrier(len(jobs))

    def send(job):
        kind, items = job
        start.wait()
        if len(items[0]) < 1 << 20:
            # The steps never wait to fill a batch: these arrive while the slow picture decodes, and queue together.
            time.sleep(0.1)
        try:
            if kind == "image":
                return _infer(server, "demo_image", "IMAGE", items, "EMBEDDING")
            return _infer(server, "demo_text", "TEXT", items, "EMBEDDING")
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(send, jobs))
    for i, picture in enumerate(good):
        assert np.abs(results[i] - demo.encode_image([picture])).max() <= 1e-6
    assert "InputError: image #0: cannot decode image bytes of length 13" in str(results[4])
    assert "InputError: image #0: refusing image bytes" in str(results[5]) and "too large" in str(results[5])
    assert "InputError: text #0 is not valid UTF-8: byte b'\\xe9' at position 3" in str(results[6])
    assert np.abs(results[7] - demo.encode_text(["синий круг"])).max() <= 1e-6
    assert results[8].shape == (1, demo.embed_dim)
    after = server.batch_counts("demo_preprocess")
    grown = {size: n - before.get(size, 0) for size, n in after.items() if n > before.get(size, 0)}
    print(f"demo_preprocess executions by batch size with the bad pictures: {dict(sorted(grown.items()))}")
    assert max(grown) >= 4, f"the bad pictures never shared a batch with good ones: {grown}"
    assert server.process.poll() is None
    assert server.get("/v2/health/live") is None  # 200 with an empty body: still serving


def test_the_openai_frontend_in_front_of_the_ensemble_layout(server, demo):
    """The container deployment: `clip-onnx triton`'s ensembles on Triton's own backends, the API run alone."""
    import openai

    from tests.serving.serve_support import start_frontend

    frontend = start_frontend(server.grpc, "--name", "demo", "--port", "0")
    try:
        client = openai.OpenAI(base_url=frontend.url, api_key="unused", max_retries=0)
        pictures = encoded_pictures(seed=9)
        texts = [t for t in RUSSIAN_TEXTS if t]
        inputs = [*texts, *(f"data:image/png;base64,{base64.b64encode(p).decode()}" for p in pictures)]
        answer = client.embeddings.create(model="demo", input=inputs)
        got = np.array([d.embedding for d in answer.data], dtype=np.float32)
        expected = np.concatenate([demo.encode_text(texts), demo.encode_image(pictures)])
        assert np.abs(got - expected).max() <= 1e-6
        # TOKENS from the ensemble's tokenize step: each text's ids up to its end id (the demo pads with 0).
        seen = sum(int(np.flatnonzero(row).max()) + 1 for row in demo.tokenize(texts)["input_ids"])
        assert answer.usage.prompt_tokens == seen
        # A picture the ensemble's preprocess step refuses is named by its place in the client's input.
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="demo", input=[inputs[-1], "data:image/png;base64,aGVsbG8="])
        assert refused.value.body["param"] == "input[1]" and refused.value.body["code"] == "invalid_input"
        assert refused.value.body["message"].startswith("input[1]: cannot decode image bytes of length 5")
    finally:
        assert frontend.stop() == 0


def test_the_openai_frontend_names_the_classifier_and_asks_for_a_name_among_several(server):
    import openai

    from tests.serving.serve_support import SERVER_PYTHON, start_frontend

    frontend = start_frontend(server.grpc, "--name", "cls", "--port", "0")
    try:
        assert "an image classifier (no embeddings)" in "".join(frontend.lines)
        client = openai.OpenAI(base_url=frontend.url, api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["cls"]
        with pytest.raises(openai.BadRequestError, match="is an image classifier: it gives class logits") as refused:
            client.embeddings.create(model="cls", input="a cat")
        assert refused.value.body["code"] == "model_not_embedding"
    finally:
        assert frontend.stop() == 0
    command = [str(SERVER_PYTHON), "-m", "clip_onnx.cli", "openai-frontend", "--triton", server.grpc, "--port", "0"]
    command += ["--ready-timeout", "1"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    assert done.returncode == 1
    assert "serves 3 clip-onnx model prefixes ['cls', 'clspy', 'demo']; pick one with --name" in done.stderr
