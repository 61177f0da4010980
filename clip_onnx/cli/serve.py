"""The serving commands: `clip-onnx triton` writes a Triton model repository, `clip-onnx serve` runs one here."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from clip_onnx.cli.openai import API_KEY_HELP, MAX_BODY_HELP
from clip_onnx.cli.shared import Stopped, catch_stop_signals, steps
from clip_onnx.errors import ClipOnnxError
from clip_onnx.openai_api import API_KEY_ENV

LOG_LEVELS = ("error", "warning", "info", "verbose")
# What each public model takes, for the summary printed once the server is READY.
INPUTS = {"IMAGE": "encoded image files", "TEXT": "UTF-8 texts"}


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Triton model repository directory (created if missing; other models in it are kept).",
)
@click.option(
    "--name",
    default=None,
    help="Model name prefix (default: the bundle directory's name, with characters other than [A-Za-z0-9_] made '_').",
)
@click.option(
    "--layout",
    type=click.Choice(["ensemble", "python"]),
    default="ensemble",
    show_default=True,
    help="ensemble: a Python step, the graph on Triton's ONNX Runtime or TensorRT backend, then an ONNX "
    "normalisation (the stock container, GPUs). python: one Python-backend model per endpoint running the "
    "whole path with ONNX Runtime on CPU (what `clip-onnx serve` runs).",
)
@click.option(
    "--max-batch",
    default=32,
    show_default=True,
    help="max_batch_size of every model; a request with more items gets HTTP 400, so clients send chunks.",
)
@click.option(
    "--instances", default=1, show_default=True, help="Instances of each graph model (python layout: of each model)."
)
@click.option(
    "--step-instances",
    type=int,
    default=None,
    help="Instances of each Python step of the ensemble layout (default: --instances): decoding scales with them.",
)
@click.option(
    "--threads",
    default=0,
    show_default=True,
    help="Python layout: ONNX Runtime threads per instance (0: the server's cores divided among the instances).",
)
@click.option(
    "--kind",
    type=click.Choice(["cpu", "gpu"]),
    default="cpu",
    show_default=True,
    help="Where the graph models run (KIND_CPU or KIND_GPU); the Python steps always run on CPU.",
)
@click.option(
    "--queue-delay-us",
    default=0,
    show_default=True,
    help="How long the graph models' dynamic batcher waits to fill a batch, microseconds. The Python steps "
    "never wait; 0 still merges requests that queued while the instances were busy.",
)
@click.option(
    "--engines",
    is_flag=True,
    help="With --kind gpu: serve the TensorRT plans in BUNDLE/engines/ "
    "(from `clip-onnx build-engine`) as tensorrt_plan models instead of the ONNX graphs.",
)
@click.option("--overwrite", is_flag=True, help="Replace this bundle's models if OUT already has them.")
def triton(
    bundle: Path,
    out: Path,
    name,
    layout,
    max_batch,
    instances,
    step_instances,
    threads,
    kind,
    queue_delay_us,
    engines,
    overwrite,
) -> None:
    """Write BUNDLE as NVIDIA Triton models into the model repository OUT.

    \b
    A CLIP bundle gives NAME_image (IMAGE: encoded file bytes) and NAME_text (TEXT:
    UTF-8), each returning EMBEDDING, L2-normalised; a classifier bundle gives
    NAME_classify (IMAGE -> LOGITS, with class names for Triton's classification).
    Tokenization and preprocessing run inside the server as Python-backend models:
    its Python needs `pip install clip-onnx "numpy<2"`. To serve a bundle on this
    machine without Docker, use `clip-onnx serve BUNDLE` instead.
    """
    from clip_onnx.triton import ServingOptions, write_repository

    options = ServingOptions(
        max_batch=max_batch,
        instances=instances,
        kind=kind,
        queue_delay_us=queue_delay_us,
        layout=layout,
        step_instances=step_instances,
        threads=threads,
    )
    with steps("triton", total=4) as step:
        models = write_repository(
            bundle, out, name=name, options=options, engines=engines, overwrite=overwrite, progress=step
        )
    for model in models:
        click.echo(f"  {model.name:32s} {model.config.platform or model.config.backend}")
    click.echo(f"wrote {len(models)} models into {out}")
    click.echo(_serve_hint(out, kind, bundle))


def _serve_hint(out: Path, kind: str, bundle: Path) -> str:
    """Commands that serve the repository: Triton's container (which the repository is for), or serve locally."""
    import shlex

    gpus = "--gpus all " if kind == "gpu" else ""
    # On a CPU machine these stop Triton logging errors about pinned memory and GPU metrics it cannot have.
    quiet = "" if kind == "gpu" else " --pinned-memory-pool-byte-size=0 --allow-gpu-metrics=false"
    server = f'pip install clip-onnx "numpy<2" && tritonserver --model-repository=/models{quiet}'
    return (
        "serve it in Triton's container (its Python needs clip-onnx, and numpy<2 for Triton 24.10):\n"
        f"  docker run --rm {gpus}--shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002 "
        f"-v {shlex.quote(str(out.absolute()))}:/models nvcr.io/nvidia/tritonserver:24.10-py3 "
        f"bash -c {shlex.quote(server)}\n"
        f"or the same endpoints on this machine without Docker: clip-onnx serve {shlex.quote(str(bundle))}"
    )


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--name",
    default=None,
    help="Model name prefix (default: the bundle directory's name, with characters other than [A-Za-z0-9_] made '_').",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The default is loopback only: nothing outside this machine reaches the server. "
    "0.0.0.0 listens on every interface; Triton has no authentication, so put a proxy in front.",
)
@click.option("--http-port", default=8000, show_default=True, help="HTTP/REST port (0: a free one).")
@click.option("--grpc-port", default=8001, show_default=True, help="gRPC port (0: a free one).")
@click.option("--metrics-port", default=8002, show_default=True, help="Prometheus metrics port (0: a free one).")
@click.option(
    "--openai-port",
    default=8080,
    show_default=True,
    help="Port of the OpenAI-compatible API (POST /v1/embeddings for texts and data-URL pictures, GET /v1/models), "
    "on --host like the rest (0: a free one).",
)
@click.option("--no-openai", is_flag=True, help="Run no OpenAI-compatible API: Triton's HTTP and gRPC only.")
@click.option("--api-key", default=None, envvar=API_KEY_ENV, help=API_KEY_HELP)
@click.option("--openai-max-body-mb", default=64, show_default=True, help=MAX_BODY_HELP)
@click.option(
    "--max-batch",
    default=32,
    show_default=True,
    help="The most items one model execution takes, from one request or several merged. A request with more "
    "items is refused with HTTP 400 / gRPC INVALID_ARGUMENT: clients send chunks of at most this many.",
)
@click.option(
    "--instances",
    default=1,
    show_default=True,
    help="Instances of each model: processes that each decode or tokenize and run the graph.",
)
@click.option(
    "--threads",
    default=0,
    show_default=True,
    help="ONNX Runtime threads per instance (0: this machine's cores divided among the instances).",
)
@click.option(
    "--queue-delay-us",
    default=0,
    show_default=True,
    help="How long a batch waits for more requests, microseconds. 0 still merges the requests that queued "
    "while every instance was busy, which is where batches come from under load.",
)
@click.option(
    "--python",
    "python",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    envvar="CLIP_ONNX_SERVE_PYTHON",
    help="The Python whose Triton server runs the models: it needs `pip install 'clip-onnx[serve]'` (numpy<2). "
    "Default: this one. [env: CLIP_ONNX_SERVE_PYTHON]",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="warning", show_default=True, help="Triton's log.")
@click.option("--ready-timeout", default=600.0, show_default=True, help="Seconds to wait for every model to load.")
def serve(
    bundle: Path,
    name,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    openai_port: int,
    no_openai: bool,
    api_key,
    openai_max_body_mb: int,
    max_batch: int,
    instances: int,
    threads: int,
    queue_delay_us: int,
    python,
    log_level: str,
    ready_timeout: float,
) -> None:
    """Serve BUNDLE with a real NVIDIA Triton server on this machine, without Docker, until Ctrl-C or SIGTERM.

    \b
    The models are the public contract `clip-onnx triton` writes, so a client works
    unchanged against either: NAME_image (IMAGE: encoded files) and NAME_text (TEXT:
    UTF-8), each returning EMBEDDING (float32, unit length), or NAME_classify (IMAGE ->
    LOGITS) for a classifier bundle. Inputs are BYTES tensors shaped [n, 1].
    Each model decodes or tokenizes and runs its graph with ONNX Runtime in one Python
    process per instance (Triton's Python backend). The server is the `tritonserver` of
    the nvidia-pytriton wheel: `pip install 'clip-onnx[serve]'`.
    """
    from clip_onnx.triton import ApiSettings, Ports, ServingOptions, serve_bundle

    options = ServingOptions(
        max_batch=max_batch, instances=instances, threads=threads, queue_delay_us=queue_delay_us, layout="python"
    )
    ports = Ports(host, http_port, grpc_port, metrics_port, None if no_openai else openai_port)
    api = ApiSettings(api_key=api_key or None, max_body_mb=openai_max_body_mb)
    stopping = catch_stop_signals("serve")
    try:
        with serve_bundle(
            bundle,
            name=name,
            options=options,
            ports=ports,
            python=python,
            log_level=log_level,
            ready_timeout=ready_timeout,
            api=api,
            sink=lambda line: click.echo(line, err=True),
            progress=lambda message: click.echo(f"serve: {message}", err=True),
        ) as served:
            _announce(bundle, served, api_key is not None)
            while (exited := served.exited()) is None:
                time.sleep(0.5)
            raise ClipOnnxError(f"{exited}\n(it stopped on its own; the other servers were stopped too)")
    except Stopped:
        click.echo("serve: stopped; the server and its model processes have exited", err=True)
    finally:
        stopping()


def _announce(bundle: Path, served, keyed: bool) -> None:
    host = served.ports.host
    scope = "loopback only" if host in ("127.0.0.1", "::1", "localhost") else "reachable from other machines"
    click.echo(f"Triton is serving {bundle} on {host} ({scope})")
    click.echo(f"  HTTP     http://{served.http_url}")
    click.echo(f"  gRPC     {served.grpc_url}")
    click.echo(f"  metrics  {served.metrics_url}")
    if served.openai_url:
        name = served.models[-1].name.rsplit("_", 1)[0]
        auth = "API key required" if keyed else "no API key"
        click.echo(f"  OpenAI   {served.openai_url}  (model {name!r}: POST /embeddings, GET /models; {auth})")
    width = max(len(m.name) for m in served.models)
    for model in served.models:
        (source,) = model.config.input
        takes, gives = model.signature()
        click.echo(f"  {model.name:{width}s}  {takes} ({INPUTS[source.name]}) -> {gives}")
    click.echo(f"Requests take at most {served.models[0].config.max_batch_size} items. Ctrl-C or SIGTERM stops it.")
    sys.stdout.flush()
