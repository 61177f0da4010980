"""`clip-onnx serve`: a bundle served by a real Triton server on this machine, in the python layout.

The repository is written to a temporary folder whose models open the bundle
where it is (no copy of the graphs), the wheel's server runs it, and everything
(server, stubs, shared memory, the folder) is gone when the context exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from clip_onnx.errors import TritonError
from clip_onnx.files import owned_tempdir, remove_stale_tempdirs
from clip_onnx.openai_api import API_KEY_ENV
from clip_onnx.triton.config import ServingOptions
from clip_onnx.triton.models import ModelDir
from clip_onnx.triton.process import ManagedProcess
from clip_onnx.triton.repository import write_repository
from clip_onnx.triton.server import (
    Ports,
    ServerInstall,
    TritonServer,
    find_server,
    prepare_backends,
    remove_stale_shared_memory,
    server_command,
)

log = logging.getLogger(__name__)

WORK_NAME = "clip-onnx-serve"
SHM_PREFIX = "clip_onnx_serve_"  # then the pid of the serving process


@dataclass(frozen=True)
class ApiSettings:
    """The OpenAI-compatible API `clip-onnx serve` runs beside Triton when ``Ports.openai`` is set."""

    api_key: str | None = field(default=None, repr=False)
    max_body_mb: int = 64
    ready_timeout: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_body_mb, bool) or not isinstance(self.max_body_mb, int) or self.max_body_mb < 1:
            raise TritonError(f"--openai-max-body-mb must be an int >= 1, got {self.max_body_mb!r}")


@dataclass(frozen=True)
class Served:
    """A running server: where it listens, the models it serves (the public ones), and the API in front."""

    server: TritonServer
    ports: Ports
    models: list[ModelDir]
    api: ManagedProcess | None = None

    @property
    def openai_url(self) -> str | None:
        """The OpenAI clients' ``base_url``, or None when no API runs."""
        return None if self.api is None else f"http://{client_host(self.ports.host)}:{self.ports.openai}/v1"

    def processes(self) -> list[int]:
        """Every process serving: tritonserver, its stubs, and the API's."""
        return [*self.server.processes(), *(self.api.processes() if self.api else [])]

    def exited(self) -> str | None:
        """None while every process runs; else which one ended and its last lines."""
        return self.server.exited() or (self.api.exited() if self.api else None)

    @property
    def http_url(self) -> str:
        return f"{client_host(self.ports.host)}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{client_host(self.ports.host)}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{client_host(self.ports.host)}:{self.ports.metrics}/metrics"


def client_host(host: str) -> str:
    """The host a client on this machine reaches a server listening on ``host`` at (a wildcard means loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


@contextmanager
def serve_bundle(
    bundle: str | os.PathLike,
    *,
    name: str | None = None,
    options: ServingOptions | None = None,
    ports: Ports | None = None,
    python: str | os.PathLike | None = None,
    log_level: str = "warning",
    ready_timeout: float = 600,
    api: ApiSettings | None = None,
    sink: Callable[[str], None] = lambda line: None,
    progress: Callable[[str], None] = lambda message: None,
) -> Iterator[Served]:
    """Serve ``bundle`` until the ``with`` block exits; yields once every model is READY.

    ``python`` is the interpreter whose Triton server and clip-onnx serve it
    (default: this one).  Where ``ports.openai`` is set, the OpenAI-compatible
    API runs beside it in its own process with ``api``'s settings.  ``sink``
    receives the servers' log lines, ``progress`` what is happening meanwhile.
    """
    options = replace(options or ServingOptions(), layout="python")
    progress("checking the Triton server install")
    install = find_server(python)
    ports = (ports or Ports()).resolved()
    # What a serve killed by SIGKILL left: its folder and shared memory (its server stopped with it).
    remove_stale_tempdirs(tempfile.gettempdir(), WORK_NAME)
    remove_stale_shared_memory(SHM_PREFIX)
    work = owned_tempdir(tempfile.gettempdir(), WORK_NAME)
    try:
        progress("writing the model repository")
        models = write_repository(bundle, work / "models", name=name, options=options, embed_bundle=False)
        backends = prepare_backends(install, work / "backends")
        tag = f"{SHM_PREFIX}{os.getpid()}_"
        command = server_command(install, work / "models", backends, ports, log_level, tag)
        server = TritonServer(command, install.environment(), f"{client_host(ports.host)}:{ports.http}", tag, work)
        server.start(sink)
        try:
            progress(f"loading {len(models)} model(s) into tritonserver (pid {server.process.pid})")
            server.wait_ready(
                [m.name for m in models], ready_timeout, lambda ready: progress(f"READY: {', '.join(ready)}")
            )
            frontend = None
            if ports.openai is not None:
                progress("starting the OpenAI-compatible API")
                prefix = models[-1].name.rsplit("_", 1)[0]
                frontend = start_api(install, ports, prefix, api or ApiSettings(), work, sink)
            try:
                yield Served(server, ports, models, frontend)
            finally:
                if frontend is not None:
                    frontend.stop(timeout=15)
        finally:
            code = server.stop()
            log.info("tritonserver exited with %s", code)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def start_api(
    install: ServerInstall, ports: Ports, prefix: str, settings: ApiSettings, work: Path, sink: Callable[[str], None]
) -> ManagedProcess:
    """`clip-onnx openai-frontend` in the serving Python, in front of this Triton; returned once it answers."""
    host = client_host(ports.host)
    command = [
        *(str(install.python), "-m", "clip_onnx.cli", "openai-frontend"),
        *("--triton", f"{host}:{ports.grpc}", "--name", prefix, "--host", ports.host, "--port", str(ports.openai)),
        *("--max-body-mb", str(settings.max_body_mb), "--ready-timeout", str(settings.ready_timeout)),
    ]
    env = install.environment()
    env.pop(API_KEY_ENV, None)  # the key travels in the environment, never on a command line others can read
    if settings.api_key:
        env[API_KEY_ENV] = settings.api_key
    frontend = ManagedProcess("openai-frontend", command, env, work)
    frontend.start(sink)
    deadline = time.monotonic() + settings.ready_timeout
    while not _answers(f"http://{host}:{ports.openai}/health"):
        exited = frontend.exited()
        if exited or time.monotonic() > deadline:
            frontend.stop(timeout=5)
            raise TritonError(exited or f"the OpenAI API did not answer within {settings.ready_timeout:.0f}s")
        time.sleep(0.1)
    return frontend


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
