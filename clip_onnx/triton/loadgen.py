"""A load generator for the served models (tritonclient over HTTP or gRPC, or the OpenAI API), and the baseline.

Each of ``concurrency`` threads holds its own client and sends one request
after another (a closed loop, as perf_analyzer's concurrency mode does); the
synchronous clients cost the least client CPU per request of tritonclient's
options.  The OpenAI path is driven with a plain keep-alive HTTP connection per
thread sending what the ``openai`` SDK sends (base64 answers), not the SDK
itself, so that the client's own cost stays small beside the server's.
Latency is measured around each request; the server's own CPU time is read
from /proc for the processes given, so a report can say how much of the
machine the client itself took.  Optionally a fraction of the requests carry
an undecodable item, and every answer is checked: bad ones must be refused
as the client's fault (HTTP 400 / gRPC INVALID_ARGUMENT), good ones must equal
the reference embeddings.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import resource
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from clip_onnx.errors import InputError

log = logging.getLogger(__name__)

BAD_ITEM = b"\x89PNG\r\n\x1a\n not an image"
OPENAI_BAD_TEXT = "https://example.com/not-fetched.jpg"
PROTOCOLS = ("http", "grpc", "openai")
CLIENT_FAULT = ("400", "StatusCode.INVALID_ARGUMENT")


@dataclass(frozen=True)
class Load:
    """What to send: ``items`` (encoded files or UTF-8 texts) to ``model``'s ``input``, ``batch`` per request."""

    url: str  # host:port of the protocol's endpoint
    protocol: str  # "http", "grpc" or "openai" (the OpenAI-compatible API: model is its model id)
    model: str
    input: str  # "IMAGE" or "TEXT"
    output: str  # "EMBEDDING" or "LOGITS"
    items: Sequence[bytes]
    batch: int = 1
    bad_every: int = 0  # every n-th request carries BAD_ITEM instead (0: none)
    expected: np.ndarray | None = None  # the reference output for each of ``items``
    tolerance: float = 1e-6
    triton_model: str | None = None  # the Triton model whose statistics count the batches (default: ``model``)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InputError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if not self.items or self.batch < 1:
            raise InputError("a load needs at least one item and a batch of at least 1")


@dataclass
class Tally:
    """One thread's counts; merged into a Row at the end."""

    latencies: list[float] = field(default_factory=list)
    good: int = 0
    refused_bad: int = 0  # a bad request refused as the client's fault: what must happen
    wrong: list[str] = field(default_factory=list)  # anything else: a failure of the server


@dataclass
class Row:
    """One measured run: throughput, latency percentiles, CPU of both sides, and the server's batches."""

    label: str
    concurrency: int
    batch: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    good: int = 0
    refused_bad: int = 0
    wrong: list[str] = field(default_factory=list)
    client_cpu_s: float | None = None
    server_cpu_s: float | None = None
    machine_cpu_s: float | None = None  # every process's, from /proc/stat: what is left is someone else's load
    batch_sizes: dict[int, int] | None = None
    server_rss_mb: list[float] | None = None  # summed VmRSS samples: shared memory counts once per process
    server_pss_mb: list[float] | None = None  # summed PSS samples: shared pages split among their processes

    @property
    def per_second(self) -> float:
        """Requests per second (times ``batch`` for items)."""
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        data = dict(self.__dict__, per_second=self.per_second, items_per_second=self.per_second * self.batch)
        data["wrong"] = self.wrong[:20]
        return data


def percentiles(latencies: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 of latencies in seconds, in milliseconds."""
    if not latencies:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(np.asarray(latencies) * 1e3, [50, 99])
    return float(p50), float(p99)


class Refused(Exception):
    """A request the server answered with an error: ``status`` as the protocol names it ("400", "StatusCode...")."""

    def __init__(self, status: str, message: str):
        self.status = status
        super().__init__(f"{status}: {message}"[:300])


class TritonSender:
    """One tritonclient (HTTP or gRPC) sending ``load``'s requests to its Triton model."""

    def __init__(self, load: Load):
        self.load = load
        if load.protocol == "http":
            import tritonclient.http as module

            self.client = module.InferenceServerClient(load.url, connection_timeout=60, network_timeout=300)
        else:
            import tritonclient.grpc as module  # type: ignore[no-redef]

            self.client = module.InferenceServerClient(load.url)
        self.module = module

    def send(self, items: list[bytes]) -> np.ndarray:
        from tritonclient.utils import InferenceServerException

        tensor = self.module.InferInput(self.load.input, [len(items), 1], "BYTES")
        tensor.set_data_from_numpy(np.array(items, dtype=object).reshape(-1, 1))
        try:
            return self.client.infer(self.load.model, [tensor]).as_numpy(self.load.output)
        except InferenceServerException as exc:
            raise Refused(str(exc.status()), str(exc)) from None

    def close(self) -> None:
        self.client.close()


class OpenAISender:
    """One keep-alive HTTP connection posting ``load``'s items to the OpenAI API as its SDK does (base64)."""

    def __init__(self, load: Load):
        host, _, port = load.url.rpartition(":")
        self.load = load
        self.connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=300)

    def send(self, items: list[bytes]) -> np.ndarray:
        strings = [_data_url(item) if self.load.input == "IMAGE" else _text(item) for item in items]
        body = json.dumps({"model": self.load.model, "input": strings, "encoding_format": "base64"})
        self.connection.request("POST", "/v1/embeddings", body.encode(), {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise Refused(str(response.status), answer.decode("utf-8", errors="replace"))
        data = sorted(json.loads(answer)["data"], key=lambda d: d["index"])
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])

    def close(self) -> None:
        self.connection.close()


def _data_url(item: bytes) -> str:
    kind = "png" if item.startswith(b"\x89PNG") else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(item).decode('ascii')}"


def _text(item: bytes) -> str:
    # BAD_ITEM is no UTF-8 text; its stand-in on the OpenAI path is a web address, which the API refuses.
    return OPENAI_BAD_TEXT if item == BAD_ITEM else item.decode("utf-8")


def _worker(load: Load, worker: int, start: threading.Barrier, begin: list[float], stop: list[float], tally: Tally):
    sender = OpenAISender(load) if load.protocol == "openai" else TritonSender(load)
    count = len(load.items)
    sent = 0
    try:
        start.wait()
        while True:
            now = time.perf_counter()
            if now >= stop[0]:
                break
            first = (worker * 7919 + sent * load.batch) % count
            indices = [(first + j) % count for j in range(load.batch)]
            bad = load.bad_every > 0 and (worker + sent * 13) % load.bad_every == 0
            sent += 1
            try:
                outcome = _check_good(
                    load, indices, sender.send([BAD_ITEM if bad else load.items[i] for i in indices]), bad
                )
            except Refused as exc:
                outcome = "refused" if bad and exc.status in CLIENT_FAULT else str(exc)
            if now >= begin[0]:  # warm-up requests are not counted
                tally.latencies.append(time.perf_counter() - now)
                if outcome == "good":
                    tally.good += 1
                elif outcome == "refused":
                    tally.refused_bad += 1
                else:
                    tally.wrong.append(outcome)
    finally:
        sender.close()


def _check_good(load: Load, indices: list[int], result: np.ndarray, bad: bool) -> str:
    if bad:
        return "a bad item was answered instead of refused"
    if load.expected is not None:
        diff = float(np.abs(result - load.expected[indices]).max())
        if not diff <= load.tolerance:
            return f"max abs {diff:.2e} against the reference for items {indices}"
    return "good"


def run_load(
    load: Load,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
    label: str = "",
    server_pids: Callable[[], list[int]] | None = None,
    stats_url: str | None = None,
    rss_every: float = 0.0,
) -> Row:
    """Drive ``load`` from ``concurrency`` threads for ``warmup`` + ``seconds``; the counted part as a Row.

    ``server_pids`` lists the server's processes (for CPU and RSS); ``stats_url`` is the server's HTTP
    host:port for Triton's statistics; ``rss_every`` > 0 samples the server's RSS that often (seconds).
    """
    tallies = [Tally() for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    begin, stop = [float("inf")], [float("inf")]
    threads = [
        threading.Thread(target=_worker, args=(load, i, start, begin, stop, tallies[i]), daemon=True)
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    now = time.perf_counter()
    begin[0], stop[0] = now + warmup, now + warmup + seconds
    time.sleep(warmup)
    before = _snapshot(server_pids, stats_url, load.triton_model or load.model)
    memory = _sample_memory(server_pids, stop[0], rss_every) if rss_every > 0 and server_pids else None
    for thread in threads:
        thread.join()
    after = _snapshot(server_pids, stats_url, load.triton_model or load.model)
    latencies = [x for t in tallies for x in t.latencies]
    p50, p99 = percentiles(latencies)
    return Row(
        label=label,
        concurrency=concurrency,
        batch=load.batch,
        requests=len(latencies),
        seconds=seconds,
        p50_ms=p50,
        p99_ms=p99,
        good=sum(t.good for t in tallies),
        refused_bad=sum(t.refused_bad for t in tallies),
        wrong=[w for t in tallies for w in t.wrong],
        client_cpu_s=after["client"] - before["client"],
        server_cpu_s=None if server_pids is None else after["server"] - before["server"],
        machine_cpu_s=after["machine"] - before["machine"],
        batch_sizes=_grown(before["batches"], after["batches"]) if stats_url else None,
        server_rss_mb=[rss for rss, _ in memory] if memory else None,
        server_pss_mb=[pss for _, pss in memory] if memory else None,
    )


def _snapshot(server_pids, stats_url: str | None, model: str) -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "client": usage.ru_utime + usage.ru_stime,
        "server": cpu_seconds(server_pids()) if server_pids else 0.0,
        "machine": machine_cpu_seconds(),
        "batches": batch_counts(stats_url, model) if stats_url else {},
    }


def _grown(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    return {size: n - before.get(size, 0) for size, n in sorted(after.items()) if n > before.get(size, 0)}


def _sample_memory(server_pids, until: float, every: float) -> list[tuple[float, float]]:
    samples = []
    while time.perf_counter() < until:
        samples.append(memory_mb(server_pids()))
        time.sleep(min(every, max(0.0, until - time.perf_counter())))
    return samples


def batch_counts(http_url: str, model: str) -> dict[int, int]:
    """Executions so far by batch size (items per execution), from Triton's statistics of ``model``.

    Empty where the server does not share them (PyTriton, for one, restricts the statistics API).
    """
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as response:
            stats = json.loads(response.read())["model_stats"][0]
    except urllib.error.HTTPError as exc:
        log.warning("no statistics from %s for %s: HTTP %s", http_url, model, exc.code)
        return {}
    return {int(s["batch_size"]): int(s["compute_infer"]["count"]) for s in stats.get("batch_stats", [])}


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes have used so far (those that exited meanwhile count 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat: not idle, not iowait."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system, irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def memory_mb(pids: Sequence[int]) -> tuple[float, float]:
    """The processes' resident memory, MiB, summed: (VmRSS, PSS). PSS counts shared memory once in all."""
    rss = pss = 0
    for pid in pids:
        try:
            status = open(f"/proc/{pid}/status").read()
            rollup = open(f"/proc/{pid}/smaps_rollup").read()
        except OSError:
            continue
        rss += _kib(status, "VmRSS:")
        pss += _kib(rollup, "Pss:")
    return rss / 1024, pss / 1024


def _kib(text: str, key: str) -> int:
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith(key)), 0)
