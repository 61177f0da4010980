"""`clip-onnx serve` end to end: the command, a real Triton server (the nvidia-pytriton wheel's), real clients.

The command runs in the server venv (.venv-triton, numpy<2), as `pip install
'clip-onnx[serve]'` sets a user up; the clients and the reference ClipModel run here.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from clip_onnx.runtime import ClipModel
from tests.serving.serve_support import (
    FREE_PORTS,
    ROOT,
    SERVER_PYTHON,
    SERVER_VENV,
    Serve,
    cmdline,
    listening,
    pgid,
    start_serve,
    stop_serve,
)
from tests.serving.triton_support import RUSSIAN_TEXTS, encoded_pictures

http = pytest.importorskip("tritonclient.http")
grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.triton

MAX_BATCH = 8


@pytest.fixture(scope="module")
def served(demo_bundle):
    options = ["--name", "demo", *FREE_PORTS]
    serve = start_serve(demo_bundle, *options, "--max-batch", str(MAX_BATCH), "--queue-delay-us", "20000")
    yield serve
    stop_serve(serve, signal.SIGKILL)


@pytest.fixture(scope="module")
def demo(demo_bundle) -> ClipModel:
    return ClipModel.load(demo_bundle)


def _strings(module, name: str, items: list[bytes]):
    tensor = module.InferInput(name, [len(items), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=object).reshape(-1, 1))
    return tensor


def _http(served: Serve, model: str, name: str, items: list[bytes]) -> np.ndarray:
    client = http.InferenceServerClient(served.http)
    try:
        return client.infer(model, [_strings(http, name, items)]).as_numpy("EMBEDDING")
    finally:
        client.close()


def test_serve_announces_urls_and_models_and_listens_on_loopback_only(served):
    text = "".join(served.lines)
    assert "on 127.0.0.1 (loopback only)" in text
    assert re.search(r"demo_image\s+IMAGE BYTES \[n, 1\] \(encoded image files\) -> EMBEDDING FP32 \[n, 64\]\n", text)
    tokens = r"EMBEDDING FP32 \[n, 64\], TOKENS INT32 \[n, 1\]\n"
    assert re.search(r"demo_text\s+TEXT BYTES \[n, 1\] \(UTF-8 texts\) -> " + tokens, text)
    assert re.search(
        r"  OpenAI   http://127\.0\.0\.1:\d+/v1  \(model 'demo': POST /embeddings, GET /models; no API", text
    )
    urls = (served.http, served.grpc, served.metrics, served.openai)
    ports = {int(url.rsplit(":", 1)[1].split("/")[0]) for url in urls}
    assert len(ports) == 4
    assert listening(ports) == dict.fromkeys(ports, "127.0.0.1")
    # Quiet on a CPU machine: none of the CUDA, NVML or DCGM errors Triton logs without a GPU.
    assert not re.search(r"CUDA|NVML|DCGM|CudaDriverHelper", text), text


def test_http_and_grpc_give_clip_models_embeddings(served, demo):
    pictures = encoded_pictures()
    texts = [t.encode() for t in RUSSIAN_TEXTS]
    images = _http(served, "demo_image", "IMAGE", pictures)
    assert np.abs(images - demo.encode_image(pictures)).max() <= 1e-6
    client = grpc.InferenceServerClient(served.grpc)
    try:
        served_texts = client.infer("demo_text", [_strings(grpc, "TEXT", texts)]).as_numpy("EMBEDDING")
    finally:
        client.close()
    assert np.abs(served_texts - demo.encode_text(RUSSIAN_TEXTS)).max() <= 1e-6


def test_bad_items_are_the_clients_fault_400_and_invalid_argument(served):
    with pytest.raises(InferenceServerException) as bad_http:
        _http(served, "demo_image", "IMAGE", [b"not a picture"])
    assert bad_http.value.status() == "400"
    assert "InputError: image #0: cannot decode image bytes of length 13" in bad_http.value.message()
    client = grpc.InferenceServerClient(served.grpc)
    try:
        with pytest.raises(InferenceServerException) as bad_grpc:
            client.infer("demo_text", [_strings(grpc, "TEXT", [b"caf\xe9"])])
    finally:
        client.close()
    assert bad_grpc.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "text #0 is not valid UTF-8" in bad_grpc.value.message()
    # More items than --max-batch: refused whole; clients send chunks of at most that many.
    with pytest.raises(InferenceServerException) as too_many:
        _http(served, "demo_image", "IMAGE", encoded_pictures() * 2)
    assert too_many.value.status() == "400"
    assert f"batch-size must be <= {MAX_BATCH}" in too_many.value.message()


def test_concurrent_requests_share_executions_and_a_bad_one_fails_alone(served, demo):
    pictures = encoded_pictures(seed=5)
    items = [[p] for p in pictures] + [[b"\x89PNG broken"], pictures[:2]]
    start = threading.Barrier(len(items))

    def send(batch):
        start.wait()
        try:
            return _http(served, "demo_image", "IMAGE", batch)
        except InferenceServerException as exc:
            return exc

    client = http.InferenceServerClient(served.http)
    before = client.get_inference_statistics("demo_image")["model_stats"][0]
    with ThreadPoolExecutor(len(items)) as pool:
        results = list(pool.map(send, items))
    after = client.get_inference_statistics("demo_image")["model_stats"][0]
    client.close()
    for batch, result in zip(items, results, strict=True):
        if batch[0].startswith(b"\x89PNG broken"):
            assert isinstance(result, InferenceServerException) and result.status() == "400"
        else:
            assert np.abs(result - demo.encode_image(batch)).max() <= 1e-6
    executions = int(after["execution_count"]) - int(before["execution_count"])
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    print(f"{len(items)} requests, {inferences} items, in {executions} executions")
    assert executions < len(items)


def test_serve_bench_checks_every_answer_and_reads_the_batches(served, demo_bundle, tmp_path):
    import json

    from click.testing import CliRunner

    from clip_onnx.cli import cli

    openai = served.openai.removeprefix("http://").removesuffix("/v1")
    options = ["--url", served.http, "--openai-url", openai, "--name", "demo", "--concurrency", "3"]
    timing = ["--seconds", "1.5", "--warmup", "0.3", "--bad-every", "4", "--no-baseline", "--out", str(tmp_path)]
    protocols = ["--protocols", "http,openai"]
    result = CliRunner().invoke(cli, ["serve-bench", str(demo_bundle), *options, *protocols, *timing])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "serve-bench.json").read_text(encoding="utf-8"))["rows"]
    assert [row["label"] for row in rows] == [
        f"{endpoint} served {protocol} c3" for endpoint in ("image", "text") for protocol in ("http", "openai")
    ]
    for row in rows:
        print(f"{row['label']}: {row['requests']} requests, {row['refused_bad']} bad, batches {row['batch_sizes']}")
        assert row["wrong"] == [] and row["good"] > 0 and row["refused_bad"] > 0
        assert row["good"] + row["refused_bad"] == row["requests"]
        # Both paths reach the same Triton model, whose statistics count every good item at least once.
        assert sum(int(size) * n for size, n in row["batch_sizes"].items()) >= row["good"]
    report = (tmp_path / "serve-bench.md").read_text(encoding="utf-8")
    assert "| image served http c3 |" in report and "| text served openai c3 |" in report


def test_ctrl_c_stops_the_server_and_every_child(served):
    pids = served.server_pids()
    assert len(pids) == 3  # tritonserver and one stub per model
    api = served.api_pid()
    assert api is not None
    pids.append(api)
    repository = re.search(r"--model-repository=(\S+)", cmdline(pids[0])).group(1)
    assert Path(repository).is_dir()
    assert stop_serve(served, signal.SIGINT) == 0
    assert "serve: stopped; the server and its model processes have exited" in "".join(served.lines)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and pgid(pid) is not None]
    assert not alive, f"still running after Ctrl-C: {[cmdline(p) for p in alive]}"
    assert not Path(repository).parent.exists()  # the temporary repository is gone
    assert not list(Path("/dev/shm").glob(f"clip_onnx_serve_{served.process.pid}_*"))


def test_a_killed_serve_takes_its_server_along_and_sigterm_stops_the_next_one(demo_bundle):
    ports = list(FREE_PORTS)
    killed = start_serve(demo_bundle, *ports)
    pids = killed.server_pids()
    left = Path(re.search(r"--model-repository=(\S+)", cmdline(pids[0])).group(1)).parent
    stop_serve(killed, signal.SIGKILL)  # no chance to clean up: the server is told by the kernel (PR_SET_PDEATHSIG)
    deadline = time.monotonic() + 30
    while any(pgid(pid) is not None for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if pgid(pid) is not None], "the server outlived its killed serve"
    assert left.is_dir()
    serve = start_serve(demo_bundle, *ports)
    assert not left.exists()  # the next serve removes what the killed one left
    pids = serve.server_pids()
    assert stop_serve(serve, signal.SIGTERM) == 0
    assert not [pid for pid in pids if pgid(pid) is not None]


def test_serve_says_what_the_serving_python_lacks(demo_bundle, tmp_path):
    # The test venv has numpy 2 and no Triton server: exactly what a user must not serve from.
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "clip_onnx.cli", "serve", str(demo_bundle)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    assert result.returncode == 1
    assert "has no Triton server; pip install 'clip-onnx[serve]'" in result.stderr


def test_a_port_in_use_is_refused_before_anything_starts(demo_bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(SERVER_PYTHON), "-m", "clip_onnx.cli", "serve", str(demo_bundle), "--http-port", str(port)],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=120,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} for http" in result.stderr and "--http-port" in result.stderr


def test_a_bundle_that_fails_its_self_test_here_never_becomes_ready(demo_int8_bundle, tmp_path):
    """The python layout opens each model through ClipModel.load, whose self-test runs at Triton's model load."""
    import json
    import shutil

    from clip_onnx.files import sha256_file

    if not SERVER_PYTHON.is_file():
        pytest.skip(f"no server venv at {SERVER_VENV}; run scripts/triton-venv.sh")
    bundle = Path(shutil.copytree(demo_int8_bundle, tmp_path / "drifted"))
    reference = bundle / "self_test" / "visual.npy"
    np.save(reference, -np.load(reference))  # what a machine computing other vectors would be judged against
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["self_test/visual.npy"] = {"sha256": sha256_file(reference), "size": reference.stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    ports = list(FREE_PORTS)
    done = subprocess.run(
        [str(SERVER_PYTHON), "-m", "clip_onnx.cli", "serve", str(bundle), *ports],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "READY" not in done.stdout and "Triton is serving" not in done.stdout
    assert "error: Triton could not load drifted_image: Internal: SelfTestError:" in done.stderr
    assert "visual tower: min cosine" in done.stderr and "below 0.997707" in done.stderr
