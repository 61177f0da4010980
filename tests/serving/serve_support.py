"""Helpers of the `clip-onnx serve` tests: the command run in the server venv, its processes and ports."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_VENV = Path(os.environ.get("CLIP_ONNX_TRITON_VENV", ROOT / ".venv-triton"))
SERVER_PYTHON = SERVER_VENV / "bin" / "python"
# Every port a free one: tests run beside other servers, and beside each other.
FREE_PORTS = ("--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--openai-port", "0")


@dataclass
class Serve:
    process: subprocess.Popen
    lines: list[str]
    http: str
    grpc: str
    metrics: str
    openai: str | None  # the OpenAI clients' base_url, http://host:port/v1

    def api_pid(self) -> int | None:
        """The OpenAI API's process (serve's child besides tritonserver), if one runs."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        found = [int(c) for c in children if "openai-frontend" in cmdline(int(c))]
        return found[0] if found else None

    def server_pids(self) -> list[int]:
        """tritonserver (the serve command's child) and its process group: the Python-backend stubs."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        (server,) = [int(c) for c in children if "tritonserver" in cmdline(int(c))]
        return [server, *[pid for pid in _all_pids() if pid != server and pgid(pid) == server]]


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError):
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def listening(ports: set[int]) -> dict[int, str]:
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


def start_serve(bundle: Path, *options: str) -> Serve:
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
    lines = _read_until(process, "Ctrl-C or SIGTERM stops it", 180, "serve did not announce its models")
    text = "".join(lines)
    urls = {key: re.search(rf"^  {key}\s+(\S+)", text, re.M) for key in ("HTTP", "gRPC", "metrics", "OpenAI")}
    openai = urls["OpenAI"].group(1) if urls["OpenAI"] else None
    return Serve(
        process,
        lines,
        urls["HTTP"].group(1).removeprefix("http://"),
        urls["gRPC"].group(1),
        urls["metrics"].group(1),
        openai,
    )


def stop_serve(serve: Serve, sig: int) -> int:
    if serve.process.poll() is None:
        os.killpg(serve.process.pid, sig)
    try:
        return serve.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(serve.process.pid, signal.SIGKILL)
        raise


@dataclass
class Frontend:
    """`clip-onnx openai-frontend` run alone, in the server venv, against some Triton's gRPC endpoint."""

    process: subprocess.Popen
    lines: list[str]
    url: str  # the OpenAI clients' base_url

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def start_frontend(triton_grpc: str, *options: str, env: dict[str, str] | None = None) -> Frontend:
    """The frontend, returned once it announces its URL; pytest.fail with its output if it exits first."""
    command = [str(SERVER_PYTHON), "-m", "clip_onnx.cli", "openai-frontend", "--triton", triton_grpc, *options]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(env if env is not None else os.environ, PYTHONPATH=str(ROOT)),
    )
    lines = _read_until(process, "OpenAI-compatible API at ", 120, "openai-frontend did not announce itself")
    url = re.search(r"^OpenAI-compatible API at (\S+) ", "".join(lines), re.M).group(1)
    return Frontend(process, lines, url)


def _read_until(process: subprocess.Popen, marker: str, timeout: float, failure: str) -> list[str]:
    """The lines ``process`` writes up to the first holding ``marker``; pytest.fail with them if it never does."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not lines or marker not in lines[-1]:
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{failure}:\n" + "".join(lines) + (process.stdout.read() or ""))
        lines.append(line)
    # Keep draining its output, so a chatty server never blocks on a full pipe.
    threading.Thread(target=lambda: [lines.append(x) for x in process.stdout], daemon=True).start()
    return lines
