"""The OpenAI-compatible API of `clip-onnx serve`, driven by the clients applications use, against ClipModel.

The server (the command, a real tritonserver, the API's own process) runs in the
server venv; the clients run here: the ``openai`` SDK (sync and async, its
default base64 and ``float``), langchain-openai, litellm and LlamaIndex. Every
answer is compared with ``ClipModel`` on the same inputs, which the export
proved against eager PyTorch.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal

import numpy as np
import openai
import pytest

from clip_onnx.runtime import ClipModel
from tests.serving.serve_support import FREE_PORTS, start_frontend, start_serve, stop_serve
from tests.serving.triton_support import RUSSIAN_TEXTS, encoded_pictures

pytestmark = pytest.mark.triton

MAX_BATCH = 8
KEY = "sk-test-0123456789"
TEXTS = [t for t in RUSSIAN_TEXTS if t]  # OpenAI's API refuses an empty string, and so does this one
MIME = {b"\x89PNG": "png", b"\xff\xd8\xff": "jpeg", b"GIF8": "gif", b"BM": "bmp"}


def data_url(raw: bytes) -> str:
    kind = next(kind for magic, kind in MIME.items() if raw.startswith(magic))
    return f"data:image/{kind};base64,{base64.b64encode(raw).decode('ascii')}"


@pytest.fixture(scope="module")
def served(demo_bundle):
    options = ["--name", "demo", *FREE_PORTS, "--max-batch", str(MAX_BATCH), "--openai-max-body-mb", "1"]
    serve = start_serve(demo_bundle, *options)
    yield serve
    stop_serve(serve, signal.SIGKILL)


@pytest.fixture(scope="module")
def demo(demo_bundle) -> ClipModel:
    return ClipModel.load(demo_bundle)


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.openai, api_key="unused", max_retries=0)


def tokens_seen(model: ClipModel, texts: list[str]) -> int:
    """The ids the textual graph is fed up to each row's end id (the demo tokenizer pads with 0 after it)."""
    return sum(int(np.flatnonzero(row).max()) + 1 for row in model.tokenize(texts)["input_ids"])


def vectors(response) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def test_models_lists_the_served_bundle_under_its_name(client):
    (model,) = client.models.list().data
    assert (model.id, model.object, model.owned_by) == ("demo", "model", "clip-onnx")
    assert client.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError, match="does not exist here"):
        client.models.retrieve("text-embedding-3-small")


def test_texts_in_base64_and_float_equal_clip_model(client, demo):
    expected = demo.encode_text(TEXTS)
    default = client.embeddings.create(model="demo", input=TEXTS)  # the SDK asks for base64 and decodes it
    assert default.model == "demo" and default.object == "list"
    assert np.abs(vectors(default) - expected).max() <= 1e-6
    floats = client.embeddings.create(model="demo", input=TEXTS, encoding_format="float")
    assert np.abs(vectors(floats) - expected).max() <= 1e-6
    assert default.usage.prompt_tokens == default.usage.total_tokens == tokens_seen(demo, TEXTS)
    single = client.embeddings.create(model="demo", input="красный круг", dimensions=64)
    assert np.abs(vectors(single) - demo.encode_text(["красный круг"])).max() <= 1e-6
    assert single.usage.prompt_tokens == tokens_seen(demo, ["красный круг"])


def test_data_url_pictures_and_a_mixed_list_come_back_in_input_order(client, demo):
    pictures = encoded_pictures(seed=3)
    images = client.embeddings.create(model="demo", input=[data_url(p) for p in pictures])
    assert np.abs(vectors(images) - demo.encode_image(pictures)).max() <= 1e-6
    assert images.usage.prompt_tokens == 0  # pictures are no tokens
    mixed = [TEXTS[0], data_url(pictures[1]), TEXTS[1], TEXTS[2], data_url(pictures[4]), data_url(pictures[0])]
    answer = client.embeddings.create(model="demo", input=mixed, encoding_format="float")
    expected = [
        demo.encode_text([item])[0] if not item.startswith("data:") else demo.encode_image([pictures[j]])[0]
        for item, j in zip(mixed, [None, 1, None, None, 4, 0], strict=True)
    ]
    assert np.abs(vectors(answer) - np.stack(expected)).max() <= 1e-6
    assert answer.usage.prompt_tokens == tokens_seen(demo, [TEXTS[0], TEXTS[1], TEXTS[2]])


def test_the_async_client_with_concurrent_requests(served, demo):
    pictures = encoded_pictures(seed=4)
    requests = [[TEXTS[i % len(TEXTS)], data_url(pictures[i % len(pictures)])] for i in range(12)]

    async def run():
        async with openai.AsyncOpenAI(base_url=served.openai, api_key="unused", max_retries=0) as client:
            return await asyncio.gather(*(client.embeddings.create(model="demo", input=r) for r in requests))

    for i, answer in enumerate(asyncio.run(run())):
        expected = np.concatenate([demo.encode_text([requests[i][0]]), demo.encode_image([pictures[i % 6]])])
        assert np.abs(vectors(answer) - expected).max() <= 1e-6


def test_a_request_of_2048_items_is_split_into_triton_batches_and_2049_are_refused(client, demo):
    texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(2048)]
    answer = client.embeddings.create(model="demo", input=texts)
    assert len(answer.data) == 2048 > MAX_BATCH
    assert np.abs(vectors(answer) - demo.encode_text(texts)).max() <= 1e-6
    with pytest.raises(openai.BadRequestError, match="more than the 2048 one request may hold") as refused:
        client.embeddings.create(model="demo", input=[*texts, "one more"])
    assert refused.value.body["code"] == "too_many_inputs"


def test_langchain_embeds_documents_in_its_chunks_of_1000_and_a_query(served, demo):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model="demo", base_url=served.openai, api_key="unused", check_embedding_ctx_length=False, max_retries=0
    )
    documents = [f"{TEXTS[i % len(TEXTS)]} №{i}" for i in range(1200)]  # two requests: 1000 and 200
    assert np.abs(np.array(embeddings.embed_documents(documents)) - demo.encode_text(documents)).max() <= 1e-6
    query = np.array(embeddings.embed_query("синий квадрат"), dtype=np.float32)
    assert np.abs(query - demo.encode_text(["синий квадрат"])[0]).max() <= 1e-6


def test_litellm_embedding_through_its_openai_provider(served, demo):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of its price list at import
    import litellm

    pictures = encoded_pictures(seed=6)[:2]
    inputs = [TEXTS[0], data_url(pictures[0]), data_url(pictures[1])]
    answer = litellm.embedding(model="openai/demo", input=inputs, api_base=served.openai, api_key="unused")
    got = np.array([item["embedding"] for item in answer.data], dtype=np.float32)
    expected = np.concatenate([demo.encode_text(TEXTS[:1]), demo.encode_image(pictures)])
    assert np.abs(got - expected).max() <= 1e-6
    assert answer.usage.prompt_tokens == tokens_seen(demo, TEXTS[:1])


def test_llama_index_openai_like_embedding(served, demo):
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    embedder = OpenAILikeEmbedding(model_name="demo", api_base=served.openai, api_key="unused", embed_batch_size=3)
    batch = np.array(embedder.get_text_embedding_batch(TEXTS), dtype=np.float32)
    assert np.abs(batch - demo.encode_text(TEXTS)).max() <= 1e-6
    query = np.array(embedder.get_query_embedding("жёлтый треугольник"), dtype=np.float32)
    assert np.abs(query - demo.encode_text(["жёлтый треугольник"])[0]).max() <= 1e-6


def test_an_api_key_is_required_on_every_v1_route_of_the_frontend_run_alone(served, demo):
    """`clip-onnx openai-frontend` against the Triton that serve started: the deployment of a Triton elsewhere."""
    frontend = start_frontend(served.grpc, "--port", "0", env=dict(os.environ, CLIP_ONNX_API_KEY=KEY))
    try:
        assert "model 'demo'" in "".join(frontend.lines) and "an API key required" in "".join(frontend.lines)
        for key in ("wrong-key", ""):
            stranger = openai.OpenAI(base_url=frontend.url, api_key=key or "x", max_retries=0)
            if not key:
                stranger = stranger.with_options(default_headers={"Authorization": ""})
            with pytest.raises(openai.AuthenticationError) as refused:
                stranger.embeddings.create(model="demo", input="кот")
            assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"
            with pytest.raises(openai.AuthenticationError):
                stranger.models.list()
        keyed = openai.OpenAI(base_url=frontend.url, api_key=KEY, max_retries=0)
        answer = keyed.embeddings.create(model="demo", input=TEXTS[:2])
        assert np.abs(vectors(answer) - demo.encode_text(TEXTS[:2])).max() <= 1e-6
    finally:
        assert frontend.stop() == 0
    assert "Traceback" not in "".join(frontend.lines)


def _post(url: str, body: bytes | None, method: str = "POST", path: str = "/embeddings", headers=None):
    """A raw request to the API (what no SDK would send); the status and the parsed JSON answer."""
    import http.client
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(method, parts.path + path, body, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _body(**fields) -> bytes:
    import json

    return json.dumps({"model": "demo", "input": "кот", **fields}).encode()


def _bad_rows() -> list[tuple]:
    from tests.serving.triton_support import huge_png

    picture = data_url(encoded_pictures()[0])
    return [
        # what is sent: (method, path, body) -> status, a fragment of error.message, error.param, error.code
        ("POST", "/embeddings", b"{not json", 400, "not valid JSON", None, "invalid_json"),
        ("POST", "/embeddings", b"[1, 2]", 400, "must be a JSON object", None, "invalid_json"),
        ("POST", "/embeddings", b"", 400, "has no body", None, "no_body"),
        ("POST", "/embeddings", b'{"model": "demo"}', 400, "input: Field required", "input", "invalid_value"),
        ("POST", "/embeddings", _body(input={"text": "x"}), 400, "input", "input", "invalid_value"),
        ("POST", "/embeddings", _body(encoding_format="fp16"), 400, "'float' or 'base64'", "encoding_format", None),
        ("POST", "/embeddings", _body(model="text-embedding-3-small"), 404, "does not exist here", "model", None),
        ("POST", "/embeddings", _body(input=[]), 400, "empty list", "input", "empty_input"),
        ("POST", "/embeddings", _body(input=["кот", ""]), 400, "input[1] is an empty string", "input[1]", None),
        ("POST", "/embeddings", _body(input=[1, 2, 3]), 400, "token ids", "input", "token_ids_not_supported"),
        ("POST", "/embeddings", _body(input=[[1, 2]]), 400, "token ids", "input", "token_ids_not_supported"),
        ("POST", "/embeddings", _body(dimensions=32), 400, "gives 64-dimensional", "dimensions", None),
        ("POST", "/embeddings", _body(input=["https://x.org/a.jpg"]), 400, "never fetches", "input[0]", None),
        ("POST", "/embeddings", _body(input=["a", "data:image/png;base64,@@"]), 400, "not valid base64", "input[1]",
         None),
        ("POST", "/embeddings", _body(input=["data:text/plain;base64,aGk="]), 400, "only pictures", "input[0]", None),
        ("POST", "/embeddings", _body(input=["data:image/png,raw"]), 400, "without ';base64'", "input[0]", None),
        ("POST", "/embeddings", _body(input=["data:image/png;base64,"]), 400, "holds no bytes", "input[0]", None),
        ("POST", "/embeddings", _body(input=[picture, data_url(b"\x89PNG\r\n\x1a\n junk")]), 400,
         "input[1]: cannot decode", "input[1]", "invalid_input"),
        ("POST", "/embeddings", _body(input=["кот", data_url(huge_png())]), 400,
         "too large to decode safely", "input[1]", "invalid_input"),
        ("POST", "/embeddings", _body(input="x" * (1 << 20)), 413, "over the server's limit of 1048576 bytes", None,
         "request_too_large"),
        ("GET", "/embeddings", None, 405, "GET is not allowed on /v1/embeddings", None, "method_not_allowed"),
        ("DELETE", "/models", None, 405, "DELETE is not allowed", None, "method_not_allowed"),
        ("POST", "/completions", _body(), 404, "no route /v1/completions", None, "not_found"),
    ]  # fmt: skip


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(served, client, demo):
    for method, path, body, status, fragment, param, code in _bad_rows():
        got, answer = _post(served.openai, body, method, path)
        error = answer["error"]
        print(f"{method} {path} {body[:60] if body else body!r} -> {got} {error}")
        assert got == status, (body, answer)
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert fragment in error["message"], error
        assert error["param"] == param and (code is None or error["code"] == code), error
    # The server is unharmed: a good request right after, and no traceback logged for any of the above.
    after = client.embeddings.create(model="demo", input=TEXTS[:3])
    assert np.abs(vectors(after) - demo.encode_text(TEXTS[:3])).max() <= 1e-6
    assert "Traceback" not in "".join(served.lines)


def test_a_web_address_is_refused_and_never_fetched(served):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(1.0)
        port = listener.getsockname()[1]
        for url in (f"https://127.0.0.1:{port}/cat.jpg", f"http://127.0.0.1:{port}/cat.jpg"):
            status, answer = _post(served.openai, _body(input=["кот", url]))
            assert status == 400 and answer["error"]["code"] == "url_not_supported", answer
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody knocked: the server made no connection to the address it was given


def test_a_text_that_merely_contains_a_url_or_starts_like_a_data_url_is_a_text(client, demo):
    texts = ["see https://example.org for cats", "data: sales rose, profits fell"]
    answer = client.embeddings.create(model="demo", input=texts)
    assert np.abs(vectors(answer) - demo.encode_text(texts)).max() <= 1e-6


def test_a_streamed_body_without_content_length_is_cut_at_the_cap(served, client):
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(served.openai)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    chunks = [b'{"model": "demo", "input": "', *[b"x" * 65536] * 20, b'"}']  # 1.25 MiB, no Content-Length
    try:
        connection.request("POST", "/v1/embeddings", iter(chunks), {"Content-Type": "application/json"},
                           encode_chunked=True)  # fmt: skip
        response = connection.getresponse()
        assert response.status == 413 and b"request_too_large" in response.read()
    finally:
        connection.close()
    assert client.embeddings.create(model="demo", input="кот").data  # and the server goes on


def test_when_triton_goes_away_the_api_answers_503_and_its_health_says_so(demo_bundle):
    """A 5xx is what OpenAI clients retry: the API must not turn a lost server into a 4xx, or into a traceback."""
    import urllib.error
    import urllib.request

    serve = start_serve(demo_bundle, "--name", "gone", *FREE_PORTS[:6], "--no-openai")
    frontend = start_frontend(serve.grpc, "--port", "0")
    try:
        client = openai.OpenAI(base_url=frontend.url, api_key="unused", max_retries=0)
        assert client.embeddings.create(model="gone", input="кот").data
        health = frontend.url.removesuffix("/v1") + "/health"
        with urllib.request.urlopen(health, timeout=10) as response:
            assert response.status == 200
        triton = serve.server_pids()[0]
        os.kill(triton, signal.SIGKILL)
        with pytest.raises(openai.InternalServerError) as lost:
            client.embeddings.create(model="gone", input="кот")
        assert lost.value.status_code == 503 and lost.value.body["type"] == "server_error"
        assert lost.value.body["code"] == "unavailable"
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(health, timeout=10)
        assert unhealthy.value.code == 503
    finally:
        stop_serve(serve, signal.SIGKILL)
        assert frontend.stop() == 0
    assert "Traceback" not in "".join(frontend.lines)
