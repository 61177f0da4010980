"""The Triton models behind the API: found once through Triton's own clients, then called with asyncio gRPC.

The API is a translator: every picture and text goes to the public models
``clip-onnx triton`` and ``clip-onnx serve`` write (``NAME_image``,
``NAME_text``, ``NAME_classify``), in requests of at most the model's
``max_batch_size`` items, and Triton's dynamic batcher, instances and model
state do the rest.  A refusal of the model (an undecodable picture: gRPC
INVALID_ARGUMENT) becomes a 400 that names the item in the client's ``input``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clip_onnx.errors import ApiError, TritonError

log = logging.getLogger(__name__)

SUFFIXES = ("_image", "_text", "_classify")
# A model's own refusal of an item: "InputError: image #3: cannot decode ..." (step_model.py writes it),
# after "in ensemble 'NAME_image', " where an ensemble step refused it.
INPUT_ERROR = "InputError: "
ITEM_IN_MESSAGE = re.compile(r"(?:image|text) #(\d+)(?::| is)?\s*")
CLIENT_FAULT = "StatusCode.INVALID_ARGUMENT"
UNAVAILABLE = ("StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND", "StatusCode.DEADLINE_EXCEEDED")


@dataclass(frozen=True)
class ServedModel:
    """One bundle as the API lists it: ``name`` is the Triton models' prefix and the OpenAI model id."""

    name: str
    kind: str  # "clip" or "classifier"
    dim: int
    max_batch: int
    tokens: bool  # NAME_text gives TOKENS (repositories written since clip-onnx 0.2)
    created: int

    def tower_model(self, modality: str) -> str:
        return f"{self.name}_{modality}"


def discover(url: str, name: str | None, timeout: float) -> ServedModel:
    """The bundle the Triton server at ``url`` (gRPC host:port) serves, waiting up to ``timeout`` for READY."""
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                index = client.get_model_repository_index(as_json=True).get("models", [])
            except Exception as exc:  # tritonclient raises InferenceServerException, grpc its own errors
                found, why = None, f"cannot reach Triton's gRPC endpoint at {url} ({_short(exc)})"
            else:
                found, why = _pick(index, name, url)
            if found is not None:
                config = {m: client.get_model_config(m, as_json=True)["config"] for m in found}
                return _described(found, config, url)
            if time.monotonic() > deadline:
                raise TritonError(f"{why} after waiting {timeout:.0f}s")
            time.sleep(0.5)
    finally:
        client.close()


def _pick(index: list[dict], name: str | None, url: str) -> tuple[list[str] | None, str]:
    """The READY public models of ``name`` (or of the only prefix served), or None and why not yet."""
    ready = {m["name"] for m in index if m.get("state") == "READY"}
    known = {m["name"] for m in index}
    prefixes = sorted({n[: -len(s)] for n in known for s in SUFFIXES if n.endswith(s) and len(n) > len(s)})
    if name is None:
        if len(prefixes) != 1:
            return None, (
                f"Triton at {url} serves {len(prefixes)} clip-onnx model prefixes {prefixes}; pick one with --name"
                if prefixes
                else f"Triton at {url} serves no clip-onnx models (NAME_image, NAME_text or NAME_classify)"
            )
        name = prefixes[0]
    wanted = [f"{name}_classify"] if f"{name}_classify" in known else [f"{name}_image", f"{name}_text"]
    missing = [m for m in wanted if m not in known]
    if missing:
        return None, f"Triton at {url} has no model {missing[0]!r} (clip-onnx prefixes there: {prefixes})"
    waiting = [m for m in wanted if m not in ready]
    if waiting:
        return None, f"Triton at {url} has not made {waiting} READY"
    return wanted, ""


def _described(models: list[str], configs: dict[str, dict], url: str) -> ServedModel:
    first = configs[models[0]]
    name = models[0].rsplit("_", 1)[0]
    outputs = {o["name"]: o for m in models for o in configs[m].get("output", [])}
    main = outputs.get("LOGITS") if models[0].endswith("_classify") else outputs.get("EMBEDDING")
    if main is None:
        raise TritonError(f"{models} at {url} do not give EMBEDDING or LOGITS; they are not clip-onnx models")
    tokens = "TOKENS" in outputs
    if not tokens and not models[0].endswith("_classify"):
        log.warning("%s_text gives no TOKENS (a repository older than clip-onnx 0.2): usage reports 0 tokens", name)
    return ServedModel(
        name=name,
        kind="classifier" if models[0].endswith("_classify") else "clip",
        dim=int(main["dims"][-1]),
        max_batch=int(first.get("max_batch_size") or 1),
        tokens=tokens,
        created=int(time.time()),
    )


class TritonBackend:
    """Embeds pictures and texts with a served model over Triton's asyncio gRPC client (one per event loop)."""

    def __init__(self, url: str, model: ServedModel):
        self.url = url
        self.model = model
        self._client = None

    def client(self):
        if self._client is None:  # made inside the server's event loop, which gRPC's channel is bound to
            import tritonclient.grpc.aio as grpc_aio

            self._client = grpc_aio.InferenceServerClient(self.url)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def ready(self) -> bool:
        try:
            models = [self.model.tower_model(m) for m in ("image", "text")]
            if self.model.kind == "classifier":
                models = [self.model.tower_model("classify")]
            return all([await self.client().is_model_ready(m) for m in models])
        except Exception:  # unreachable or stopping: not ready, whatever the reason
            return False

    async def embed(self, modality: str, items: Sequence[tuple[int, bytes]]) -> tuple[np.ndarray, int]:
        """Unit-length embeddings of ``items`` (each ``(input index, payload)``) in order, and their tokens."""
        step = self.model.max_batch
        chunks = [items[i : i + step] for i in range(0, len(items), step)]
        results = await gather_all(*(self._infer(modality, chunk) for chunk in chunks))
        vectors = np.concatenate([vectors for vectors, _ in results])
        return vectors, sum(tokens for _, tokens in results)

    async def _infer(self, modality: str, chunk: Sequence[tuple[int, bytes]]) -> tuple[np.ndarray, int]:
        import tritonclient.grpc.aio as grpc_aio

        tensor = grpc_aio.InferInput("IMAGE" if modality == "image" else "TEXT", [len(chunk), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([payload for _, payload in chunk], dtype=object).reshape(-1, 1))
        names = ["EMBEDDING", "TOKENS"] if modality == "text" and self.model.tokens else ["EMBEDDING"]
        outputs = [grpc_aio.InferRequestedOutput(n) for n in names]
        try:
            result = await self.client().infer(self.model.tower_model(modality), [tensor], outputs=outputs)
        except Exception as exc:
            raise _api_error(exc, [index for index, _ in chunk]) from None
        tokens = int(result.as_numpy("TOKENS").sum()) if "TOKENS" in names else 0
        return result.as_numpy("EMBEDDING"), tokens


async def gather_all(*coroutines):
    """The results of ``coroutines`` run concurrently; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()  # a refused chunk fails the request: the others' answers are not needed


def _api_error(exc: Exception, indices: list[int]) -> ApiError:
    """A Triton failure as the API's error: the client's fault (400, naming its item) or the server's (5xx)."""
    status = str(exc.status()) if hasattr(exc, "status") else ""
    message = getattr(exc, "message", lambda: str(exc))() or str(exc)
    if status == CLIENT_FAULT:
        if INPUT_ERROR in message:
            message = message[message.index(INPUT_ERROR) + len(INPUT_ERROR) :]
        match = ITEM_IN_MESSAGE.match(message)
        if match and int(match[1]) < len(indices):
            where = f"input[{indices[int(match[1])]}]"
            return ApiError(400, f"{where}: {message[match.end() :]}", param=where, code="invalid_input")
        return ApiError(400, message, param="input", code="invalid_input")
    if status in UNAVAILABLE or not status:
        log.warning("Triton at %s is unavailable: %s", status or "-", _short(exc))
        return ApiError(503, "the model server is unavailable; retry shortly", kind="server_error", code="unavailable")
    log.error("Triton failed a request (%s): %s", status, _short(exc))
    return ApiError(500, f"the model server failed ({status})", kind="server_error", code="model_error")


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
