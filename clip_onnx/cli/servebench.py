"""`clip-onnx serve-bench`: load-test a served bundle beside the same bundle in-process, in one run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _ints(value: str, what: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {value!r}") from None


@click.command("serve-bench")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--endpoints",
    default=None,
    help="Comma-separated: image,text for a CLIP bundle (default both), classify for a classifier.",
)
@click.option(
    "--protocols",
    default="http",
    show_default=True,
    help="Comma-separated: http, grpc (Triton's), openai (the OpenAI-compatible API, as its SDK calls it).",
)
@click.option("--concurrency", default="1,8,32", show_default=True, help="Comma-separated client counts.")
@click.option("--seconds", default=10.0, show_default=True, help="Measured seconds per row.")
@click.option("--warmup", default=2.0, show_default=True, help="Uncounted seconds before each row.")
@click.option(
    "--threads",
    default=2,
    show_default=True,
    help="ONNX Runtime threads of the in-process baseline; give the server the same (--server-threads).",
)
@click.option(
    "--url",
    default=None,
    help="host:port of a running Triton's HTTP endpoint serving this bundle (e.g. the Docker deployment). "
    "Default: start `clip-onnx serve` here, with the --server-* options, and measure its CPU too.",
)
@click.option("--grpc-url", default=None, help="host:port of that server's gRPC endpoint.")
@click.option("--openai-url", default=None, help="host:port of the OpenAI-compatible API in front of that server.")
@click.option("--name", default=None, help="Model name prefix (default: from the bundle directory, as serve).")
@click.option("--server-instances", default=1, show_default=True, help="serve --instances.")
@click.option("--server-threads", default=0, show_default=True, help="serve --threads (0: cores / instances).")
@click.option("--server-queue-delay-us", default=0, show_default=True, help="serve --queue-delay-us.")
@click.option("--server-max-batch", default=32, show_default=True, help="serve --max-batch.")
@click.option("--python", "python", type=click.Path(path_type=Path, dir_okay=False), help="serve --python.")
@click.option(
    "--bad-every",
    default=0,
    show_default=True,
    help="Soak: every n-th request carries an undecodable image and must be refused with 400; 20 = 5%.",
)
@click.option("--rss-every", default=0.0, show_default=True, help="Soak: sample the server's RSS this often (s).")
@click.option("--no-baseline", is_flag=True, help="Skip the in-process rows.")
@click.option(
    "--quiet-cores",
    default=0.0,
    show_default=True,
    help="On a shared machine: before each row, wait until other processes use fewer cores than this.",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write serve-bench.json and .md here.")
def serve_bench(
    bundle: Path,
    endpoints,
    protocols,
    concurrency,
    seconds,
    warmup,
    threads,
    url,
    grpc_url,
    openai_url,
    name,
    server_instances,
    server_threads,
    server_queue_delay_us,
    server_max_batch,
    python,
    bad_every,
    rss_every,
    no_baseline,
    quiet_cores,
    out,
) -> None:
    """Load-test BUNDLE served by Triton, beside the same bundle in this process, in one run.

    \b
    Rows per endpoint: in-process ClipModel (or ClipClassifier) at batch 1 and batch 8,
    one caller; then the server at each concurrency over each protocol, one item per
    request, each client a thread with its own tritonclient (or, for openai, an HTTP
    connection posting what the openai SDK posts) in a closed loop. Every
    answer is checked against the in-process result (max abs <= 1e-6). Reports req/s,
    p50/p99 latency, ratios to the in-process rows, the CPU time per request of this
    client and (when started here) of the server, and the server's batch sizes from
    /v2/models/*/stats. Loopback only: it starts the server on 127.0.0.1.
    """
    from clip_onnx.bundle import read_bundle
    from clip_onnx.triton import BenchPlan, ServingOptions, bench_report, machine_facts
    from clip_onnx.triton import serve_bench as run

    kind = read_bundle(bundle, verify=False).kind
    chosen = endpoints.split(",") if endpoints else (["classify"] if kind == "classifier" else ["image", "text"])
    plan = BenchPlan(
        endpoints=[e.strip() for e in chosen],
        protocols=[p.strip() for p in protocols.split(",")],
        concurrencies=_ints(concurrency, "--concurrency"),
        seconds=seconds,
        warmup=warmup,
        threads=threads,
        bad_every=bad_every,
        rss_every=rss_every,
        baseline=not no_baseline,
        quiet_cores=quiet_cores,
    )
    options = ServingOptions(
        max_batch=server_max_batch,
        instances=server_instances,
        threads=server_threads,
        queue_delay_us=server_queue_delay_us,
        layout="python",
    )
    rows = run(
        bundle,
        plan,
        http_url=url,
        grpc_url=grpc_url,
        openai_url=openai_url,
        name=name,
        options=options,
        python=python,
        progress=lambda message: click.echo(f"serve-bench: {message}", err=True),
    )
    table = bench_report(rows)
    click.echo(table)
    wrong = sum(len(row.wrong) for row in rows)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        record = {
            "machine": machine_facts(),
            "bundle": str(bundle),
            "plan": plan.__dict__,
            "server": None if url else options.__dict__,
            "rows": [row.as_dict() for row in rows],
        }
        (out / "serve-bench.json").write_text(json.dumps(record, indent=1, default=list), encoding="utf-8")
        (out / "serve-bench.md").write_text(table + "\n", encoding="utf-8")
    if wrong:
        first = next(w for row in rows for w in row.wrong)
        click.secho(f"error: {wrong} answers were wrong; the first: {first}", fg="red", err=True)
        sys.exit(1)
