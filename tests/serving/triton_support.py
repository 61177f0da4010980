"""Helpers the Triton tests share: external-data bundles, encoded test pictures, a classifier bundle."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from clip_onnx.bundle import BundleWriter, read_bundle

RUSSIAN_TEXTS = [
    "красный круг",
    "синий квадрат на зелёном фоне",
    "жёлтый треугольник",
    "",
    "Ёлка, съешь же ещё этих мягких французских булок!",
    "кошка " * 40,
]


def to_external_data(source: Path, out: Path, towers=("visual",)) -> Path:
    """A copy of a bundle whose ``towers`` keep their weights in ``<graph>.data`` beside the graph."""
    import onnx

    bundle = read_bundle(source)
    graphs = {bundle.graph(t).file for t in towers}
    with BundleWriter(out) as writer:
        for name in bundle.manifest.files:
            if name in graphs:
                model = onnx.load(str(bundle.path / name))
                onnx.save_model(
                    model,
                    str(writer.dir / name),
                    save_as_external_data=True,
                    all_tensors_to_one_file=True,
                    location=f"{name}.data",
                )
            else:
                writer.add_file(name, bundle.path / name)
        writer.commit(bundle.manifest)
    return out


def encoded_pictures(seed: int = 0) -> list[bytes]:
    """Files of several formats, modes and shapes, as a client would upload them."""
    rng = np.random.default_rng(seed)
    out = []
    for (w, h), mode, fmt in (
        ((64, 64), "RGB", "PNG"),
        ((97, 41), "RGB", "JPEG"),
        ((30, 120), "L", "PNG"),
        ((80, 80), "RGBA", "PNG"),
        ((200, 150), "P", "GIF"),
        ((65, 64), "RGB", "BMP"),
    ):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        out.append(buffer.getvalue())
    return out


def slow_picture(side: int = 2400) -> bytes:
    """A noise JPEG that takes tens of milliseconds to decode: requests sent meanwhile queue up behind it."""
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def huge_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG header declaring width x height pixels (over Pillow's bomb limit) with a token of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def classifier_bundle(out: Path) -> Path:
    """A reduced-size timm CLIP-ViT classifier bundle, as tests/export/test_timm_clip.py makes it."""
    import timm
    import torch

    from clip_onnx.export.families import timm_clip
    from clip_onnx.export.pipeline import export_model

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_base_patch32_clip_224.laion2b_ft_in12k_in1k", pretrained=False, depth=2, embed_dim=128, num_heads=4
    ).eval()
    with torch.no_grad():
        # Zero position and class embeddings make the random classifier look at the picture.
        model.pos_embed.zero_()
        model.cls_token.zero_()
    export_model(timm_clip.exportable("tiny-b32", "tiny", model), out)
    return out
