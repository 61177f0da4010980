"""`clip-onnx openai-frontend`: the OpenAI-compatible API alone, in front of a Triton server elsewhere."""

from __future__ import annotations

import sys

import click

from clip_onnx.cli.shared import Stopped, catch_stop_signals
from clip_onnx.openai_api import API_KEY_ENV

API_KEY_HELP = (
    "Require 'Authorization: Bearer KEY' on every /v1 request (401 otherwise). Triton's own ports have no "
    f"authentication: keep them on loopback or behind a proxy. [env: {API_KEY_ENV}]"
)
MAX_BODY_HELP = "Largest request body, MiB; a larger one gets HTTP 413 (pictures travel base64: 4/3 their size)."


@click.command("openai-frontend")
@click.option(
    "--triton",
    default="127.0.0.1:8001",
    show_default=True,
    help="host:port of the Triton server's gRPC endpoint (e.g. the container serving `clip-onnx triton`'s repository).",
)
@click.option(
    "--name",
    default=None,
    help="The models' prefix (NAME_image, NAME_text): the OpenAI model id. Default: the only one Triton serves.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (default: loopback only).")
@click.option("--port", default=8080, show_default=True, help="Port to listen on (0: a free one).")
@click.option("--api-key", default=None, envvar=API_KEY_ENV, help=API_KEY_HELP)
@click.option("--max-body-mb", default=64, show_default=True, help=MAX_BODY_HELP)
@click.option(
    "--ready-timeout", default=120.0, show_default=True, help="Seconds to wait for Triton and its models to be READY."
)
def openai_frontend(triton: str, name, host: str, port: int, api_key, max_body_mb: int, ready_timeout: float) -> None:
    """Serve the OpenAI embeddings API for a bundle that Triton serves at --triton, until Ctrl-C or SIGTERM.

    \b
    POST /v1/embeddings takes {"model": NAME, "input": str | [str]}: a string that is
    a data:image/...;base64, URL is a picture for NAME_image, any other a text for
    NAME_text; the answer is OpenAI's (float or base64 vectors, usage in tokens).
    GET /v1/models lists NAME. Requests go to Triton over gRPC in batches of at most
    the models' max_batch_size. `clip-onnx serve` runs this beside its own server;
    this command is for a Triton running elsewhere, such as the repository
    `clip-onnx triton` writes, served in NVIDIA's container.
    Needs pip install 'clip-onnx[serve]' (FastAPI, uvicorn, tritonclient).
    """
    from clip_onnx.openai_api import ApiOptions, FrontendOptions, run_frontend

    if max_body_mb < 1:
        raise click.BadParameter(f"must be at least 1, got {max_body_mb}", param_hint="--max-body-mb")
    options = FrontendOptions(
        triton=triton,
        name=name,
        host=host,
        port=port,
        api=ApiOptions(api_key=api_key or None, max_body_bytes=max_body_mb << 20),
        ready_timeout=ready_timeout,
    )
    click.echo(f"openai-frontend: waiting for Triton at {triton} and its models...", err=True)

    def announce(model, url: str) -> None:
        what = "embeddings of texts and pictures" if model.kind == "clip" else "an image classifier (no embeddings)"
        auth = "an API key required" if api_key else "no API key"
        click.echo(f"OpenAI-compatible API at {url} ({auth}): model {model.name!r}, {what}, {model.dim} dimensions")
        click.echo(f"  POST {url}/embeddings   GET {url}/models   docs: {url.removesuffix('/v1')}/docs")
        sys.stdout.flush()

    restore = catch_stop_signals("openai-frontend")
    try:
        run_frontend(options, announce)
    except Stopped:
        click.echo("openai-frontend: stopped", err=True)
    finally:
        restore()
