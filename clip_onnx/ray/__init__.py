"""Embed datasets on a Ray cluster: a Ray Data ``map_batches`` job over ``clip_onnx.runtime``.

Ray schedules, moves and writes the data; this package only gives it a
callable class, ``ClipEmbedder``, that opens the bundle once per actor and
embeds batch after batch, plus ``run_ray_embed``, the whole `clip-onnx
ray-embed` job.  Images travel through the object store as encoded bytes
(read by zero-CPU tasks, regular files only) and are decoded inside the
actors.  A row that cannot be read or decoded gets a null embedding and its
reason in the ``error`` column; the job goes on.

Needs the ``[ray]`` extra (``ray[data]``).  The bundle path must be readable
on every node: a shared file system, or the same copy at the same path.
"""

from clip_onnx.ray.embedder import ClipEmbedder, embed_images, embed_texts, plan_actors, read_image_files
from clip_onnx.ray.job import STALL_TIMEOUT_S, RayEmbedSummary, run_ray_embed

__all__ = [
    "ClipEmbedder",
    "RayEmbedSummary",
    "STALL_TIMEOUT_S",
    "embed_images",
    "embed_texts",
    "plan_actors",
    "read_image_files",
    "run_ray_embed",
]
