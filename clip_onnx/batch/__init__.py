"""Embedding whole datasets on one machine: sources, the streaming pipeline and resumable writers.

Torch-free, like the runtime it drives.  pyarrow (the ``[data]`` extra) is
needed only for parquet input or output and is imported when used.  Names are
imported on first use, so the CLI can register the commands without loading
NumPy, Pillow or ONNX Runtime.
"""

from clip_onnx.lazy import lazy_getattr

_PUBLIC = {
    "EmbedSummary": "clip_onnx.batch.embed",
    "embed_dataset": "clip_onnx.batch.embed",
    "IMAGE_EXTENSIONS": "clip_onnx.batch.sources",
    "Item": "clip_onnx.batch.sources",
    "Sources": "clip_onnx.batch.sources",
    "plan_sources": "clip_onnx.batch.sources",
    "embed_command": "clip_onnx.batch.commands",
    "ray_embed_command": "clip_onnx.batch.commands",
}
__all__ = sorted(_PUBLIC)
__getattr__ = lazy_getattr(__name__, _PUBLIC)
