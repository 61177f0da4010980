"""An OpenAI-compatible embeddings API over the Triton models of a bundle (`clip-onnx serve`, `openai-frontend`).

A translator, not a second engine: FastAPI routes parse OpenAI's schema, turn
each string of ``input`` into a picture (``data:image/...;base64,``) or a
text, and forward them to ``NAME_image`` / ``NAME_text`` with Triton's asyncio
gRPC client.  Batching, instances and model state stay in Triton.  Needs
``pip install 'clip-onnx[serve]'`` (FastAPI, uvicorn, tritonclient); names
resolve on first use.
"""

from __future__ import annotations

from clip_onnx.lazy import lazy_getattr

# public name -> module that defines it
_PUBLIC = {
    "ApiOptions": "clip_onnx.openai_api.app",
    "create_app": "clip_onnx.openai_api.app",
    "FrontendOptions": "clip_onnx.openai_api.server",
    "run_frontend": "clip_onnx.openai_api.server",
    "base_url": "clip_onnx.openai_api.server",
    "discover": "clip_onnx.openai_api.backend",
    "TritonBackend": "clip_onnx.openai_api.backend",
    "ServedModel": "clip_onnx.openai_api.backend",
    "MAX_INPUTS": "clip_onnx.openai_api.schema",
}

# The API key's environment variable (`--api-key`'s): how `clip-onnx serve` hands the key to the API's process.
API_KEY_ENV = "CLIP_ONNX_API_KEY"

__all__ = sorted([*_PUBLIC, "API_KEY_ENV"])

__getattr__ = lazy_getattr(__name__, _PUBLIC)
