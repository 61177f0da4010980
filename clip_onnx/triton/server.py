"""A real Triton server on this machine, without Docker: the ``tritonserver`` (2.51) in the nvidia-pytriton wheel.

That build has only Triton's Python backend, which is all the python layout
needs.  Its Python-backend stub embeds the Python it finds first on PATH, needs
that Python's LIBDIR and the wheel's ``nvidia_pytriton.libs`` on
LD_LIBRARY_PATH, and crashes on string tensors under numpy 2; :func:`find_server`
checks all of that in the Python that will serve (``pip install 'clip-onnx[serve]'``
brings the wheel, which itself requires numpy<2).

:class:`TritonServer` runs one as a :class:`~clip_onnx.triton.process.ManagedProcess`:
in its own process group with the stubs it starts, stopped with every child.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from clip_onnx.errors import TritonError
from clip_onnx.triton.process import ManagedProcess

log = logging.getLogger(__name__)

SERVER_PACKAGE = "nvidia-pytriton==0.7.0"
# What the server's Python must hold; run there, so it imports nothing heavy.
_PROBE = """
import importlib.metadata as md, importlib.util as iu, json, os, sys, sysconfig
spec = iu.find_spec("pytriton")
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
print(json.dumps({
    "pytriton": os.path.dirname(spec.origin) if spec else None,
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "shared": sysconfig.get_config_var("Py_ENABLE_SHARED"),
    "soname": sysconfig.get_config_var("INSTSONAME"),
    "python": "%d.%d" % sys.version_info[:2],
    "numpy": version("numpy"),
    "clip_onnx": getattr(iu.find_spec("clip_onnx"), "origin", None),
    "onnxruntime": version("onnxruntime"),
}))
"""
# Errors a CPU-only machine always logs, none of which matters to a server without GPU models.
HARMLESS_ON_CPU = (
    "CudaDriverHelper has not been initialized",
    "Unable to allocate pinned system memory",
    "Failed to initialize NVML",
    "DCGM unable to start",
    "unable to create stream for",
)
LOG_LEVELS = ("error", "warning", "info", "verbose")


@dataclass(frozen=True)
class ServerInstall:
    """Where the wheel's ``tritonserver`` is, and the Python its Python-backend stub will embed."""

    python: Path
    root: Path  # pytriton/tritonserver: bin/, backends/python/, python_backend_stubs/
    libdir: str
    python_version: str

    @property
    def executable(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def stub(self) -> Path:
        return self.root / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The server's environment: the serving Python first on PATH, its LIBDIR and the wheel's libraries."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join(filter(None, [str(self.python.parent), env.get("PATH")]))
        libs = self.root.parents[1] / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [self.libdir, str(libs), env.get("LD_LIBRARY_PATH")]))
        return env


def find_server(python: str | os.PathLike | None = None) -> ServerInstall:
    """The Triton server installed in ``python`` (default: this interpreter), checked for what serving needs."""
    # Absolute, not resolved: the server runs elsewhere, and a venv's python is a link whose target is not the venv.
    python = Path(python or sys.executable).absolute()
    if not python.is_file():
        raise TritonError(f"--python {python}: no such interpreter")
    # -E: the stub's embedded Python ignores PYTHONPATH and the like, so the probe must too.
    probe = subprocess.run([str(python), "-E", "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False)
    if probe.returncode != 0:
        raise TritonError(f"cannot run {python}: {probe.stderr.strip()[-300:]}")
    found = json.loads(probe.stdout)
    where = f"the serving Python {python}"
    if not found["pytriton"]:
        raise TritonError(
            f"{where} has no Triton server; pip install 'clip-onnx[serve]' there (it brings {SERVER_PACKAGE}, "
            "whose wheel carries tritonserver), or point --python at a Python that has it"
        )
    if found["numpy"] is None or int(found["numpy"].split(".")[0]) >= 2:
        raise TritonError(
            f"{where} has numpy {found['numpy']}; the Python-backend stub of Triton 2.51 crashes on string "
            "tensors under numpy 2. pip install 'numpy<2' there, or serve from a separate venv with "
            "`pip install 'clip-onnx[serve]'` and pass its Python with --python"
        )
    if not found["clip_onnx"] or not found["onnxruntime"]:
        raise TritonError(
            f"{where} cannot import clip_onnx and onnxruntime without PYTHONPATH (which Triton's stub ignores); "
            "pip install 'clip-onnx[serve]' there"
        )
    here = Path(__file__).parents[1] / "__init__.py"
    if Path(found["clip_onnx"]).resolve() != here.resolve():
        log.warning("the server's models run the clip_onnx at %s, not this one (%s)", found["clip_onnx"], here)
    if not found["shared"] or not (Path(found["libdir"] or "") / (found["soname"] or "")).is_file():
        raise TritonError(
            f"{where} has no shared libpython in {found['libdir']} (it was built without --enable-shared), and "
            "Triton's Python-backend stub embeds it; serve from a Python built with it: a distribution's or "
            "python.org's, conda's, or pyenv's with PYTHON_CONFIGURE_OPTS=--enable-shared"
        )
    install = ServerInstall(python, Path(found["pytriton"]) / "tritonserver", found["libdir"], found["python"])
    for path in (install.executable, install.stub):
        if not path.is_file():
            raise TritonError(f"{path} is missing: Python {found['python']} is not one {SERVER_PACKAGE} serves")
    return install


def prepare_backends(install: ServerInstall, target: Path) -> Path:
    """A backend directory holding the Python backend and the stub for the serving Python's version.

    Copied, not linked: Triton refuses a backend library whose path resolves outside its folder.
    """
    python = target / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy(install.root / "backends" / "python" / name, python / name)
    shutil.copy(install.stub, python / install.stub.name)
    return target


@dataclass(frozen=True)
class Ports:
    """Where the server listens; 0 picks a free port when the server starts, and ``openai`` None runs no API."""

    host: str = "127.0.0.1"
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002
    openai: int | None = 8080  # the OpenAI-compatible API beside Triton (clip_onnx.openai_api)

    def resolved(self) -> Ports:
        """These ports with 0s replaced by free ones, each checked to be free on ``host``."""
        chosen: dict[str, int | None] = {"openai": None}
        for name in ("http", "grpc", "metrics", "openai"):
            port = getattr(self, name)
            if name == "openai" and port is None:
                continue
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise TritonError(f"--{name}-port must be a port number from 0 to 65535, got {port!r}")
            chosen[name] = _bind_check(self.host, port, name)
        taken = [p for p in chosen.values() if p is not None]
        if len(set(taken)) < len(taken):
            raise TritonError(f"the HTTP, gRPC, metrics and OpenAI ports must differ, got {chosen}")
        return Ports(self.host, **chosen)


def _bind_check(host: str, port: int, name: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise TritonError(
                f"cannot listen on {host}:{port} for {name} ({exc.strerror or exc}); another server may hold "
                f"it: pick another with --{name}-port (0 picks a free one)"
            ) from None
        return probe.getsockname()[1]


def server_command(
    install: ServerInstall, repository: Path, backends: Path, ports: Ports, log_level: str, tag: str
) -> list[str]:
    """The ``tritonserver`` command line; ``tag`` names this server's shared-memory regions."""
    if log_level not in LOG_LEVELS:
        raise TritonError(f"log level must be one of {LOG_LEVELS}, got {log_level!r}")
    level = LOG_LEVELS.index(log_level)
    return [
        str(install.executable),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        # The configs are complete: Triton must not guess, and one refused model must not hide the others.
        "--disable-auto-complete-config",
        "--exit-on-error=false",
        "--strict-readiness=true",
        "--exit-timeout-secs=10",
        f"--http-address={ports.host}",
        f"--http-port={ports.http}",
        f"--grpc-address={ports.host}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={ports.host}",
        f"--metrics-port={ports.metrics}",
        # A CPU machine: no pinned or CUDA memory pools, no GPU metrics (each logs an error without a driver).
        "--pinned-memory-pool-byte-size=0",
        "--cuda-memory-pool-byte-size=0:0",
        "--allow-gpu-metrics=false",
        f"--log-info={'true' if level >= 2 else 'false'}",
        f"--log-warning={'true' if level >= 1 else 'false'}",
        f"--log-verbose={1 if level >= 3 else 0}",
        f"--backend-config=python,shm-region-prefix-name={tag}",
    ]


class TritonServer(ManagedProcess):
    """One ``tritonserver`` process group: started, waited on until its models are READY, stopped with its stubs."""

    def __init__(self, command: list[str], env: dict[str, str], url: str, tag: str, cwd: Path):
        super().__init__("tritonserver", command, env, cwd, quiet=HARMLESS_ON_CPU)
        self.url, self.tag = url, tag

    def wait_ready(self, models: Iterable[str], timeout: float, progress: Callable[[list[str]], None]) -> None:
        """Return once every model is READY; TritonError if one is refused, the server exits, or time runs out."""
        waiting = list(models)
        deadline = time.monotonic() + timeout
        while waiting:
            exited = self.exited()
            if exited:
                raise TritonError(exited)
            index = self._index()
            failed = {m: index[m].get("reason", "") for m in waiting if index.get(m, {}).get("state") == "UNAVAILABLE"}
            if failed:
                raise TritonError(
                    "Triton could not load "
                    + "; ".join(f"{m}: {reason or 'see the log'}" for m, reason in failed.items())
                )
            ready = [m for m in waiting if index.get(m, {}).get("state") == "READY"]
            if ready:
                waiting = [m for m in waiting if m not in ready]
                progress(ready)
            if waiting and time.monotonic() > deadline:
                raise TritonError(f"models {waiting} not READY after {timeout:.0f}s:\n" + "\n".join(self.tail))
            time.sleep(0.25)

    def _index(self) -> dict[str, dict]:
        request = urllib.request.Request(f"http://{self.url}/v2/repository/index", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return {m["name"]: m for m in json.loads(response.read())}
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return {}  # not listening yet

    def stop(self, timeout: float = 20) -> int | None:
        """Stop the server and its stubs, and remove the shared memory a killed stub leaves."""
        code = super().stop(timeout)
        _remove_shared_memory(self.tag)
        return code


def remove_stale_shared_memory(prefix: str) -> None:
    """Remove the /dev/shm regions ``PREFIX<pid>_*`` whose process is gone (a server stopped by SIGKILL)."""
    for region in Path("/dev/shm").glob(f"{prefix}*"):
        pid = region.name[len(prefix) :].split("_", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                region.unlink()
            except OSError:
                pass


def _remove_shared_memory(tag: str) -> None:
    # The Python backend removes its regions on a clean exit; a killed stub leaves them in /dev/shm.
    for region in Path("/dev/shm").glob(f"{tag}*"):
        try:
            region.unlink()
        except OSError:
            pass
