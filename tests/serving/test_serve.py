"""`clip-onnx serve` end to end: the command, a real Triton server (the nvidia-pytriton wheel's), real clients.

The command runs in the server venv (.venv-triton, numpy<2), as `pip install
'clip-onnx[serve]'` sets a user up; the clients and the reference ClipModel run here.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from clip_onnx.runtime import ClipModel
from tests.serving.triton_support import RUSSIAN_TEXTS, encoded_pictures

http = pytest.importorskip("tritonclient.http")
grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.triton

ROOT = Path(__file__).resolve().parents[2]
SERVER_VENV = Path(os.environ.get("CLIP_ONNX_TRITON_VENV", ROOT / ".venv-triton"))
SERVER_PYTHON = SERVER_VENV / "bin" / "python"
MAX_BATCH = 8


@dataclass
class Serve:
    process: subprocess.Popen
    lines: list[str]
    http: str
    grpc: str
    metrics: str

    def server_pids(self) -> list[int]:
        """tritonserver (the serve command's child) and its process group: the Python-backend stubs."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        (server,) = [int(c) for c in children if "tritonserver" in _cmdline(int(c))]
        return [server, *[pid for pid in _all_pids() if pid != server and _pgid(pid) == server]]


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _listening(ports: set[int]) -> dict[int, str]:
    """The address each of ``ports`` listens on, from the kernel's socket tables (IPv4-mapped IPv6 as IPv4)."""
    found = {}
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, port = local.split(":")
            if state != "0A" or int(port, 16) not in ports:  # 0A: LISTEN
                continue
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
            ip = ipaddress.ip_address(raw)
            found[int(port, 16)] = str(getattr(ip, "ipv4_mapped", None) or ip)
    return found


def _start(bundle: Path, *options: str) -> Serve:
    if not SERVER_PYTHON.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"no server venv at {SERVER_VENV}: scripts/dev-setup.sh builds it")
        pytest.skip(f"no server venv at {SERVER_VENV}; run scripts/triton-venv.sh")
    command = [str(SERVER_PYTHON), "-m", "clip_onnx.cli", "serve", str(bundle), *options]
    # Its own session, as a terminal's foreground job: a signal to its group reaches serve, not tritonserver.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        start_new_session=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while not lines or "Ctrl-C or SIGTERM stops it" not in lines[-1]:
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            process.kill()
            pytest.fail("serve did not announce its models:\n" + "".join(lines) + (process.stdout.read() or ""))
        lines.append(line)
    # Keep draining its output, so a chatty server never blocks on a full pipe.
    threading.Thread(target=lambda: [lines.append(x) for x in process.stdout], daemon=True).start()
    text = "".join(lines)
    urls = {key: re.search(rf"^  {key}\s+(\S+)$", text, re.M).group(1) for key in ("HTTP", "gRPC", "metrics")}
    return Serve(process, lines, urls["HTTP"].removeprefix("http://"), urls["gRPC"], urls["metrics"])


def _stop(serve: Serve, sig: int) -> int:
    if serve.process.poll() is None:
        os.killpg(serve.process.pid, sig)
    try:
        return serve.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(serve.process.pid, signal.SIGKILL)
        raise


@pytest.fixture(scope="module")
def served(demo_bundle):
    options = ["--name", "demo", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    serve = _start(demo_bundle, *options, "--max-batch", str(MAX_BATCH), "--queue-delay-us", "20000")
    yield serve
    _stop(serve, signal.SIGKILL)


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
    assert re.search(r"demo_image\s+IMAGE BYTES \[n, 1\] \(encoded image files\) -> EMBEDDING FP32 \[n, 64\]", text)
    assert re.search(r"demo_text\s+TEXT BYTES \[n, 1\] \(UTF-8 texts\) -> EMBEDDING FP32 \[n, 64\]", text)
    ports = {int(url.rsplit(":", 1)[1].split("/")[0]) for url in (served.http, served.grpc, served.metrics)}
    assert _listening(ports) == dict.fromkeys(ports, "127.0.0.1")
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

    options = ["--url", served.http, "--name", "demo", "--endpoints", "image", "--concurrency", "3"]
    timing = ["--seconds", "1.5", "--warmup", "0.3", "--bad-every", "4", "--no-baseline", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, ["serve-bench", str(demo_bundle), *options, *timing])
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "serve-bench.json").read_text(encoding="utf-8"))["rows"]
    print(f"serve-bench: {row['requests']} requests, {row['refused_bad']} bad, batches {row['batch_sizes']}")
    assert row["wrong"] == [] and row["good"] > 0 and row["refused_bad"] > 0
    assert row["good"] + row["refused_bad"] == row["requests"]
    assert sum(int(size) * n for size, n in row["batch_sizes"].items()) >= row["good"]
    assert "| image served http c3 |" in (tmp_path / "serve-bench.md").read_text(encoding="utf-8")


def test_ctrl_c_stops_the_server_and_every_child(served):
    pids = served.server_pids()
    assert len(pids) == 3  # tritonserver and one stub per model
    repository = re.search(r"--model-repository=(\S+)", _cmdline(pids[0])).group(1)
    assert Path(repository).is_dir()
    assert _stop(served, signal.SIGINT) == 0
    assert "serve: stopped; the server and its model processes have exited" in "".join(served.lines)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and _pgid(pid) is not None]
    assert not alive, f"still running after Ctrl-C: {[_cmdline(p) for p in alive]}"
    assert not Path(repository).parent.exists()  # the temporary repository is gone
    assert not list(Path("/dev/shm").glob(f"clip_onnx_serve_{served.process.pid}_*"))


def test_a_killed_serve_takes_its_server_along_and_sigterm_stops_the_next_one(demo_bundle):
    ports = ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    killed = _start(demo_bundle, *ports)
    pids = killed.server_pids()
    left = Path(re.search(r"--model-repository=(\S+)", _cmdline(pids[0])).group(1)).parent
    _stop(killed, signal.SIGKILL)  # no chance to clean up: the server is told by the kernel (PR_SET_PDEATHSIG)
    deadline = time.monotonic() + 30
    while any(_pgid(pid) is not None for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if _pgid(pid) is not None], "the server outlived its killed serve"
    assert left.is_dir()
    serve = _start(demo_bundle, *ports)
    assert not left.exists()  # the next serve removes what the killed one left
    pids = serve.server_pids()
    assert _stop(serve, signal.SIGTERM) == 0
    assert not [pid for pid in pids if _pgid(pid) is not None]


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
    ports = ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
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
