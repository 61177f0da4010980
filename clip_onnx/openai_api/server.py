"""Run the API: find the served model on Triton, then serve the app with uvicorn until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from clip_onnx.errors import TritonError
from clip_onnx.openai_api.app import ApiOptions, create_app
from clip_onnx.openai_api.backend import ServedModel, TritonBackend, discover

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontendOptions:
    """Where the API listens, which Triton it forwards to, and what it accepts."""

    triton: str = "127.0.0.1:8001"  # Triton's gRPC host:port
    name: str | None = None  # the models' prefix; None: the only one Triton serves
    host: str = "127.0.0.1"
    port: int = 8080
    api: ApiOptions = field(default_factory=ApiOptions)
    ready_timeout: float = 120.0

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise TritonError(f"--port must be a port number from 0 to 65535, got {self.port!r}")


def base_url(host: str, port: int) -> str:
    """The URL OpenAI clients take as ``base_url`` for a server listening on ``host``."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def run_frontend(options: FrontendOptions, announce: Callable[[ServedModel, str], None] = lambda m, url: None) -> None:
    """Serve the API here until SIGINT or SIGTERM; ``announce`` gets the model and base URL once it listens."""
    import uvicorn

    model = discover(options.triton, options.name, options.ready_timeout)
    app = create_app(TritonBackend(options.triton, model), options.api)
    # Bound here, so that port 0 is resolved and the URL announced before uvicorn takes the socket over.
    sock = listen(options.host, options.port)
    verbose = logging.getLogger().getEffectiveLevel() < logging.WARNING
    config = uvicorn.Config(
        app,
        log_level="info" if verbose else "warning",
        access_log=verbose,
        server_header=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=30,  # SDK clients keep their connection between calls
    )
    log.info("OpenAI-compatible API for %s, pid %d", model.name, os.getpid())
    announce(model, base_url(options.host, sock.getsockname()[1]))
    uvicorn.Server(config).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port), or TritonError saying who holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise TritonError(
            f"cannot listen on {host}:{port} for the OpenAI API ({exc.strerror or exc}); another server may hold "
            "it: pick another port (0 picks a free one)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
