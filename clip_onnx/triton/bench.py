"""`clip-onnx serve-bench`: served throughput and latency beside the in-process baseline, in one run.

For each endpoint (images, texts, or a classifier's images) it times the
bundle in this process (``ClipModel`` / ``ClipClassifier`` at batch 1 and at
batch 8, one caller, the given ONNX Runtime threads) and then the server at
each concurrency, one request of one item per call.  The server is either
started here (`clip-onnx serve`'s python layout, whose processes' CPU time is
then measured too) or any Triton serving the same contract, given by URL.
"""

from __future__ import annotations

import io
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clip_onnx.errors import InputError
from clip_onnx.runtime import ClipClassifier, ClipModel
from clip_onnx.triton.loadgen import PROTOCOLS, Load, Row, machine_cpu_seconds, percentiles, run_load

log = logging.getLogger(__name__)

ENDPOINTS = {"image": ("IMAGE", "EMBEDDING"), "text": ("TEXT", "EMBEDDING"), "classify": ("IMAGE", "LOGITS")}
BASELINE_BATCHES = (1, 8)


@dataclass(frozen=True)
class BenchPlan:
    """What to measure and for how long."""

    endpoints: Sequence[str] = ("image", "text")
    protocols: Sequence[str] = ("http",)
    concurrencies: Sequence[int] = (1, 8, 32)
    seconds: float = 10.0
    warmup: float = 2.0
    threads: int = 2  # ONNX Runtime threads of the in-process baseline
    bad_every: int = 0  # soak: every n-th request carries an undecodable image
    rss_every: float = 0.0  # soak: sample the server's RSS this often
    baseline: bool = True
    quiet_cores: float = 0.0  # > 0: before each row, wait (up to 10 min) until other load is below this
    tolerance: float | None = None  # max abs of an answer against the reference (None: by the bundle's precision)

    def __post_init__(self) -> None:
        unknown = set(self.endpoints) - set(ENDPOINTS)
        if unknown or not self.endpoints:
            raise InputError(f"endpoints must be among {sorted(ENDPOINTS)}, got {list(self.endpoints)}")
        if not set(self.protocols) <= set(PROTOCOLS) or not self.protocols:
            raise InputError(f"protocols must be among {list(PROTOCOLS)}, got {list(self.protocols)}")
        if not self.concurrencies or min(self.concurrencies) < 1:
            raise InputError(f"concurrencies must be >= 1, got {list(self.concurrencies)}")


@dataclass
class Target:
    """Where the requests go: URLs, the model name prefix, and (when started here) the server's processes."""

    http: str
    grpc: str
    prefix: str
    server_pids: Callable[[], list[int]] | None = None
    rows: list[Row] = field(default_factory=list)
    openai: str | None = None  # host:port of the OpenAI-compatible API

    def url(self, protocol: str) -> str:
        if protocol == "openai" and self.openai is None:
            raise InputError("the openai protocol needs the API's address: pass --openai-url (host:port)")
        return {"http": self.http, "grpc": self.grpc, "openai": self.openai}[protocol] or ""


def inputs(model: ClipModel | ClipClassifier, endpoint: str, count: int = 48, seed: int = 7) -> list[bytes]:
    """Request items: photo-like JPEGs of varied sizes, or the bundle's sample prompts in its templates."""
    if endpoint in ("image", "classify"):
        from clip_onnx.synthetic import synthetic_images

        pictures = []
        for image in synthetic_images(count, seed=seed):
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            pictures.append(buffer.getvalue())
        return pictures
    words = model.bundle.manifest.sample_texts or ["a photo", "a drawing", "a diagram", "a map"]
    prompts = [template.format(word) for word in words for template in model.templates]
    return [prompt.encode("utf-8") for prompt in prompts[:count]]


def reference(model, endpoint: str, items: Sequence[bytes]) -> np.ndarray:
    """What the server must answer for each item, computed one item at a time as a batch-1 request is."""
    if endpoint == "classify":
        return np.concatenate([model.logits([item]) for item in items])
    if endpoint == "image":
        return np.concatenate([model.encode_image([item]) for item in items])
    return np.concatenate([model.encode_text([item.decode("utf-8")]) for item in items])


def baseline(model, endpoint: str, items: Sequence[bytes], batch: int, plan: BenchPlan) -> Row:
    """The bundle in this process: ``batch`` items per call, one caller, for ``plan.seconds``."""
    call = getattr(model, {"image": "encode_image", "classify": "logits", "text": "encode_text"}[endpoint])
    source = [item.decode("utf-8") for item in items] if endpoint == "text" else list(items)
    latencies: list[float] = []
    calls = 0
    started = time.perf_counter()
    counted_from, stop = started + plan.warmup, started + plan.warmup + plan.seconds
    cpu_before = machine_before = None
    while (now := time.perf_counter()) < stop:
        if cpu_before is None and now >= counted_from:
            cpu_before, machine_before = time.process_time(), machine_cpu_seconds()
        first = calls * batch
        call([source[(first + j) % len(source)] for j in range(batch)])
        calls += 1
        if now >= counted_from:
            latencies.append(time.perf_counter() - now)
    p50, p99 = percentiles(latencies)
    return Row(
        label=f"in-process b{batch}",
        concurrency=1,
        batch=batch,
        requests=len(latencies),
        seconds=plan.seconds,
        p50_ms=p50,
        p99_ms=p99,
        good=len(latencies),
        client_cpu_s=time.process_time() - (cpu_before or time.process_time()),
        machine_cpu_s=machine_cpu_seconds() - (machine_before or machine_cpu_seconds()),
    )


def tolerance(model, plan: BenchPlan) -> float:
    """How far a served answer may be from the batch-1 reference.

    fp32 graphs give the same numbers whatever shares the batch (1e-6). int8
    graphs quantize activations with one scale per batch (ONNX Runtime's dynamic
    quantization), so an item's embedding moves a little with its batch-mates,
    served or in-process alike (max abs ~5e-3, cosine >= 0.999 measured): 1e-2.
    """
    if plan.tolerance is not None:
        return plan.tolerance
    return 1e-2 if model.bundle.manifest.lowered else 1e-6


def bench_endpoint(model, endpoint: str, target: Target, plan: BenchPlan, progress: Callable[[str], None]) -> None:
    """The baseline rows, then one served row per protocol and concurrency, appended to ``target.rows``."""
    items = inputs(model, endpoint)
    expected = reference(model, endpoint, items)
    limit = tolerance(model, plan)
    if plan.baseline:
        for batch in BASELINE_BATCHES:
            progress(f"{endpoint}: in-process batch {batch}")
            settle(plan.quiet_cores, progress)
            target.rows.append(_labelled(baseline(model, endpoint, items, batch, plan), endpoint))
    name, output = ENDPOINTS[endpoint]
    for protocol in plan.protocols:
        # The OpenAI API names the bundle by its prefix and picks the tower from each input.
        triton_model = f"{target.prefix}_{endpoint}"
        model_name = target.prefix if protocol == "openai" else triton_model
        load = Load(
            target.url(protocol),
            protocol,
            model_name,
            name,
            output,
            items,
            1,
            plan.bad_every,
            expected,
            limit,
            triton_model,
        )
        for concurrency in plan.concurrencies:
            progress(f"{endpoint}: {protocol} concurrency {concurrency}")
            settle(plan.quiet_cores, progress)
            row = run_load(
                load,
                concurrency,
                plan.seconds,
                plan.warmup,
                label=f"served {protocol} c{concurrency}",
                server_pids=target.server_pids,
                stats_url=target.http,
                rss_every=plan.rss_every,
            )
            target.rows.append(_labelled(row, endpoint))


def settle(cores: float, progress: Callable[[str], None], patience: float = 600) -> None:
    """Wait until the machine's load (nothing of ours runs now) stays below ``cores`` for a second."""
    if cores <= 0:
        return
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        before = machine_cpu_seconds()
        time.sleep(1.0)
        busy = machine_cpu_seconds() - before
        if busy < cores:
            return
        progress(f"waiting for other processes to quiet down ({busy:.2f} cores busy)")
    progress(f"the machine stayed busy for {patience:.0f}s; measuring anyway (see the other-load column)")


def _labelled(row: Row, endpoint: str) -> Row:
    row.label = f"{endpoint} {row.label}"
    return row


def machine_facts() -> dict:
    """The facts the figures depend on: CPU model and flags that pick ONNX Runtime's kernels, cores, versions."""
    import onnxruntime

    info: dict = {"cpu": "", "cores": len(os.sched_getaffinity(0))}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not info["cpu"]:
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["flags"] = sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})
                break
    except OSError:
        pass
    info.update(python=platform.python_version(), onnxruntime=onnxruntime.__version__)
    return info


def bench_report(rows: Sequence[Row]) -> str:
    """A Markdown table: each served row beside its endpoint's in-process rows, with ratios and CPU per request."""
    lines = [
        "| endpoint, run | req/s (items/s) | p50 ms | p99 ms | vs in-process b1 | vs b8 | +p50 ms vs b1 "
        "| client CPU ms/req | server CPU ms/req | other load (cores) | items per execution: mean (max) | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base: dict[tuple[str, int], Row] = {}
    for row in rows:
        endpoint = row.label.split(" ", 1)[0]
        if "in-process" in row.label:
            base[(endpoint, row.batch)] = row
        items = row.per_second * row.batch
        b1, b8 = base.get((endpoint, 1)), base.get((endpoint, 8))
        ratio1 = f"{items / (b1.per_second * b1.batch):.2f}" if b1 and "served" in row.label else ""
        ratio8 = f"{items / (b8.per_second * b8.batch):.2f}" if b8 and "served" in row.label else ""
        added = f"{row.p50_ms - b1.p50_ms:+.2f}" if b1 and "served" in row.label else ""
        client = f"{row.client_cpu_s / row.requests * 1e3:.2f}" if row.client_cpu_s and row.requests else ""
        server = f"{row.server_cpu_s / row.requests * 1e3:.2f}" if row.server_cpu_s and row.requests else ""
        batches = _batches(row.batch_sizes)
        errors = str(len(row.wrong)) if row.wrong else "0"
        lines.append(
            f"| {row.label} | {_rate(row.per_second)} ({_rate(items)}) | {row.p50_ms:.2f} | {row.p99_ms:.2f} "
            f"| {ratio1} | {ratio8} | {added} | {client} | {server} | {_other_load(row)} | {batches} | {errors} |"
        )
    return "\n".join(lines)


def _rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _batches(sizes: dict[int, int] | None) -> str:
    """The server's executions as mean and largest items per execution (the histogram is in the JSON)."""
    if not sizes:
        return ""
    executions = sum(sizes.values())
    return f"{sum(size * n for size, n in sizes.items()) / executions:.1f} ({max(sizes)})"


def _other_load(row: Row) -> str:
    """Cores other processes kept busy during the row: the machine's CPU time less this client's and the server's."""
    if row.machine_cpu_s is None or not row.seconds:
        return ""
    ours = (row.client_cpu_s or 0.0) + (row.server_cpu_s or 0.0)
    return f"{max(0.0, row.machine_cpu_s - ours) / row.seconds:.2f}"


def serve_bench(
    bundle: str | Path,
    plan: BenchPlan,
    *,
    http_url: str | None = None,
    grpc_url: str | None = None,
    openai_url: str | None = None,
    name: str | None = None,
    options=None,
    python: str | Path | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> list[Row]:
    """Run ``plan`` against a server at ``http_url``/``grpc_url``, or against `clip-onnx serve` started here."""
    from clip_onnx.bundle import read_bundle
    from clip_onnx.triton.local import serve_bundle
    from clip_onnx.triton.models import model_prefix
    from clip_onnx.triton.server import Ports

    kind = read_bundle(bundle, verify=False).kind
    wanted = {"classifier": {"classify"}}.get(kind, {"image", "text"})
    if not set(plan.endpoints) <= wanted:
        raise InputError(f"a {kind!r} bundle serves {sorted(wanted)}, not {sorted(set(plan.endpoints) - wanted)}")
    if "openai" in plan.protocols and kind != "clip":
        raise InputError(f"the OpenAI API embeds with CLIP bundles; {bundle} holds a {kind!r} model")
    progress(f"loading {bundle} in this process ({plan.threads} ONNX Runtime threads)")
    if kind == "classifier":
        model = ClipClassifier.load(bundle, threads=plan.threads)
    else:
        model = ClipModel.load(bundle, threads=plan.threads)
    prefix = model_prefix(Path(bundle), name)
    if http_url is not None:
        target = Target(http_url, grpc_url or http_url, prefix, openai=openai_url)
        for endpoint in plan.endpoints:
            bench_endpoint(model, endpoint, target, plan, progress)
        return target.rows
    ports = Ports(http=0, grpc=0, metrics=0, openai=0 if "openai" in plan.protocols else None)
    with serve_bundle(bundle, name=name, options=options, ports=ports, python=python, progress=progress) as served:
        openai = served.openai_url.removeprefix("http://").removesuffix("/v1") if served.openai_url else None
        target = Target(served.http_url, served.grpc_url, prefix, served.processes, openai=openai)
        for endpoint in plan.endpoints:
            bench_endpoint(model, endpoint, target, plan, progress)
    return target.rows
