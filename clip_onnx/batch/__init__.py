"""Embedding whole datasets on one machine: sources, the streaming pipeline and resumable writers.

Torch-free, like the runtime it drives.  pyarrow (the ``[data]`` extra) is
needed only for parquet input or output and is imported when used.
"""

from clip_onnx.batch.embed import EmbedSummary, embed_dataset
from clip_onnx.batch.inputs import Item
from clip_onnx.batch.options import EmbedOptions
from clip_onnx.batch.sources import IMAGE_EXTENSIONS, Sources, plan_sources

__all__ = ["EmbedOptions", "EmbedSummary", "embed_dataset", "IMAGE_EXTENSIONS", "Item", "Sources", "plan_sources"]
