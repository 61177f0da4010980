"""OpenAI's embeddings and models schema as pydantic models: what the API reads and writes, in one place.

The request model is liberal where OpenAI's clients differ (unknown fields are
ignored, token-id inputs parse), so that the routes can refuse with a message
in the client's vocabulary instead of a schema dump.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from clip_onnx.errors import ApiError

# OpenAI's own limit of inputs per embeddings request.
MAX_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: ``input`` is one string or a list; token ids parse here and are refused later."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # base64: the little-endian float32 bytes


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "clip-onnx"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_body(error: ApiError) -> bytes:
    """OpenAI's ``{"error": {message, type, param, code}}`` for ``error``, as JSON bytes."""
    detail = ErrorDetail(message=error.message, type=error.kind, param=error.param, code=error.code)
    return ErrorResponse(error=detail).model_dump_json().encode()


def parse_request(body: bytes) -> EmbeddingRequest:
    """The request body as an EmbeddingRequest, or ApiError 400 naming the first field at fault."""
    if not body.strip():
        raise ApiError(400, "the request has no body; send a JSON object with 'model' and 'input'", code="no_body")
    try:
        return EmbeddingRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise ApiError(
                400, f"the body is not valid JSON ({first['msg']}); send a JSON object", code="invalid_json"
            ) from None
        if first["type"] == "model_type" and not first["loc"]:
            raise ApiError(
                400, "the body must be a JSON object with 'model' and 'input'", code="invalid_json"
            ) from None
        field = _field(first["loc"])
        got = "" if first["type"] == "missing" else f", got {first.get('input')!r:.80}"
        raise ApiError(400, f"{field}: {first['msg']}{got}", param=field.split("[")[0], code="invalid_value") from None


def _field(loc: tuple) -> str:
    # pydantic reports union members (e.g. 'str', 'list[str]') in loc; the client knows only its own fields.
    names = [str(p) for p in loc if isinstance(p, int) or p in EmbeddingRequest.model_fields]
    return "".join(f"[{p}]" if p.isdigit() else p for p in names) or "body"
