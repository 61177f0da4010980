"""The OpenAI-compatible API as a FastAPI app: routes that validate, convert and forward to Triton.

``GET /v1/models``, ``GET /v1/models/{id}`` and ``POST /v1/embeddings`` speak
OpenAI's schema (``schema.py``); ``GET /health`` answers 200 while the Triton
models are READY.  Every refusal is OpenAI's ``{"error": {...}}`` with a 4xx
status, mapped once here; a bad request fails alone and is logged as one line.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from clip_onnx.errors import ApiError
from clip_onnx.openai_api.backend import TritonBackend, gather_all
from clip_onnx.openai_api.inputs import parse_inputs
from clip_onnx.openai_api.schema import (
    MAX_INPUTS,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
    Usage,
    error_body,
    parse_request,
)

log = logging.getLogger(__name__)

JSON = "application/json"
# Statuses Starlette raises itself (no route, wrong method), in OpenAI's vocabulary.
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


@dataclass(frozen=True)
class ApiOptions:
    """What the API accepts: ``api_key`` (None: no key), the body size cap and OpenAI's item limit."""

    api_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = 64 << 20
    max_inputs: int = MAX_INPUTS


def create_app(backend: TritonBackend, options: ApiOptions | None = None) -> FastAPI:
    """The API over ``backend``'s served model."""
    options = options or ApiOptions()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await backend.close()

    app = FastAPI(
        lifespan=lifespan,
        title="clip-onnx: OpenAI-compatible embeddings",
        description="Texts and pictures (data URLs) embedded by a CLIP bundle served with NVIDIA Triton.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.backend = backend
    app.state.options = options
    app.add_middleware(Guard, api_key=options.api_key, max_body_bytes=options.max_body_bytes)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _bug)
    app.add_api_route("/v1/models", list_models, methods=["GET"], response_model=ModelList)
    app.add_api_route("/v1/models/{model_id}", get_model, methods=["GET"], response_model=ModelCard)
    app.add_api_route(
        "/v1/embeddings",
        embeddings,
        methods=["POST"],
        response_model=EmbeddingResponse,
        openapi_extra={
            "requestBody": {"required": True, "content": {JSON: {"schema": EmbeddingRequest.model_json_schema()}}}
        },
    )
    app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
    return app


def _card(backend: TritonBackend) -> ModelCard:
    return ModelCard(id=backend.model.name, created=backend.model.created)


async def list_models(request: Request) -> Response:
    """The served model, under the name of its Triton models (``--name``)."""
    return _json(ModelList(data=[_card(request.app.state.backend)]))


async def get_model(model_id: str, request: Request) -> Response:
    backend: TritonBackend = request.app.state.backend
    _check_model(backend, model_id)
    return _json(_card(backend))


async def embeddings(request: Request) -> Response:
    """Texts and ``data:image/...;base64,`` pictures, embedded in input order by the served model."""
    backend: TritonBackend = request.app.state.backend
    options: ApiOptions = request.app.state.options
    body = parse_request(await request.body())
    model = _check_model(backend, body.model)
    if model.kind != "clip":
        raise ApiError(
            400,
            f"model {model.name!r} is an image classifier: it gives class logits, not embeddings; ask Triton's "
            f"{model.name}_classify model (KServe v2) for them",
            param="model",
            code="model_not_embedding",
        )
    if body.dimensions is not None and body.dimensions != model.dim:
        raise ApiError(
            400,
            f"dimensions {body.dimensions}: model {model.name!r} gives {model.dim}-dimensional vectors, and CLIP "
            f"vectors cannot be shortened; omit dimensions or pass {model.dim}",
            param="dimensions",
            code="unsupported_dimensions",
        )
    inputs = parse_inputs(body.input, options.max_inputs)
    vectors = np.empty((inputs.count, model.dim), dtype=np.float32)
    parts = [(m, items) for m, items in (("image", inputs.images), ("text", inputs.texts)) if items]
    results = await gather_all(*(backend.embed(modality, items) for modality, items in parts))
    for (_, items), (embedded, _) in zip(parts, results, strict=True):
        vectors[[index for index, _ in items]] = embedded
    tokens = sum(counted for _, counted in results)
    data = [Embedding(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(vectors)]
    return _json(EmbeddingResponse(data=data, model=model.name, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)))


async def health(request: Request) -> Response:
    ready = await request.app.state.backend.ready()
    return Response(
        b'{"status":"ok"}' if ready else b'{"status":"unavailable"}', 200 if ready else 503, media_type=JSON
    )


def _check_model(backend: TritonBackend, name: str):
    if name != backend.model.name:
        raise ApiError(
            404,
            f"the model {name!r} does not exist here; this server has {backend.model.name!r} (GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    return backend.model


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    # OpenAI's base64 is the little-endian float32 bytes, which its SDK decodes with numpy.frombuffer.
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def _json(model) -> Response:
    return Response(model.model_dump_json(), media_type=JSON)


def error_response(error: ApiError) -> Response:
    headers = {"www-authenticate": "Bearer"} if error.status == 401 else None
    return Response(error_body(error), error.status, headers=headers, media_type=JSON)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    log.info("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.message)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    error = ApiError(
        exc.status_code, message.get(exc.status_code, str(exc.detail)), code=HTTP_CODES.get(exc.status_code)
    )
    response = error_response(error)
    response.headers.update(exc.headers or {})
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    return error_response(ApiError(400, f"invalid request: {exc}", code="invalid_value"))


async def _bug(request: Request, exc: Exception) -> Response:
    # Not a bad request but a fault of this server: the one case that logs a traceback.
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    error = ApiError(500, f"internal error ({type(exc).__name__}); please report it", kind="server_error")
    return error_response(error)


class Guard:
    """ASGI middleware for ``/v1``: the API key, and the body size cap (413), checked before a route runs."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        refusal = self._refusal(headers)
        if refusal is not None:
            return await error_response(refusal)(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            return message

        await self.app(scope, counted, send)

    def _refusal(self, headers: dict[bytes, bytes]) -> ApiError | None:
        if self.expected is not None and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            return ApiError(
                401,
                "missing or wrong API key; send the server's key as 'Authorization: Bearer KEY'",
                kind="authentication_error",
                code="invalid_api_key",
            )
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return ApiError(400, f"Content-Length {length[:20]!r} is not a number", code="invalid_header")
            if int(length) > self.max_body_bytes:
                return _too_large(self.max_body_bytes)
        return None


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is over the server's limit of {limit} bytes; send fewer or smaller pictures per request",
        code="request_too_large",
    )
