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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from clip_onnx.files import owned_tempdir, remove_stale_tempdirs
from clip_onnx.triton.config import ServingOptions
from clip_onnx.triton.models import ModelDir
from clip_onnx.triton.repository import write_repository
from clip_onnx.triton.server import (
    Ports,
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
class Served:
    """A running server: where it listens and the models it serves (the public ones)."""

    server: TritonServer
    ports: Ports
    models: list[ModelDir]

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
    sink: Callable[[str], None] = lambda line: None,
    progress: Callable[[str], None] = lambda message: None,
) -> Iterator[Served]:
    """Serve ``bundle`` until the ``with`` block exits; yields once every model is READY.

    ``python`` is the interpreter whose Triton server and clip-onnx serve it
    (default: this one).  ``sink`` receives the server's log lines, ``progress``
    what is happening meanwhile.
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
            yield Served(server, ports, models)
        finally:
            code = server.stop()
            log.info("tritonserver exited with %s", code)
    finally:
        shutil.rmtree(work, ignore_errors=True)
