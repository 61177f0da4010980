"""Throughput of `clip-onnx embed` over a folder of JPEGs against its two stages measured alone, in one run.

    python benchmarks/embed_throughput.py BUNDLE [--int8] [--images 2000] [--repeats 3] [--out results.json]

Each repeat measures, in this order and in this process:

- decode+preprocess: the embed pipeline's own thread pool reading, decoding
  and preprocessing every file, with no model;
- inference only, two ways, on ready pixel batches of the same batch size:
  one ``encode_pixels`` call at a time with ONNX Runtime's default threads
  (one per core: the inference-only rate of ``ratio``), and ``--workers``
  concurrent calls on one-thread sessions (the way the pipeline runs the
  model; ``strict_ratio`` takes the faster of the two);
- embed: ``clip_onnx.batch.embed_dataset`` over the folder to parquet, the
  library call behind the command, timed end to end (walk, model load,
  pipeline, final write).

The claim checked is embed >= 0.85 x min(decode+preprocess, inference), per
repeat and on the medians of the repeats.  ``--int8`` first quantizes the bundle's towers without
the accuracy gate, as `clip-onnx bench` does (a random-weights export keeps
fp32 because the gate's top-1 test means nothing on random weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clip_onnx.batch import embed_dataset
from clip_onnx.batch.pipeline import chunks, in_order, prepare_images
from clip_onnx.batch.sources import Item, walk_images
from clip_onnx.runtime import ClipModel


def make_photos(folder: Path, count: int, sides: tuple[int, int], seed: int = 0) -> list[str]:
    """JPEGs with a long side of ``sides`` px (quality 90): gradients, shapes and sensor-like noise."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(walk_images(str(folder)))
    if len(existing) == count:
        return existing
    rng = np.random.default_rng(seed)
    for i in range(count):
        long = int(rng.integers(sides[0], sides[1] + 1))
        short = int(long * rng.choice([0.5625, 0.75, 1.0]))
        w, h = (long, short) if rng.random() < 0.7 else (short, long)
        ramp = np.linspace(rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), w, dtype=np.float32)
        pixels = np.broadcast_to(ramp, (h, w, 3)) + rng.normal(0, 10, (h, w, 3)).astype(np.float32)
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            box = (x0, y0, x0 + int(rng.integers(20, w - x0)), y0 + int(rng.integers(20, h - y0)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        img.save(folder / f"{i:05d}.jpg", quality=90)
    return sorted(walk_images(str(folder)))


def measure(run: Callable[[], int]) -> dict:
    """Wall-clock images/s of ``run`` (which returns how many images it did) and this process's CPU ms per image."""
    wall, cpu = time.perf_counter(), time.process_time()
    images = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images_per_s": images / wall, "cpu_ms_per_image": 1000 * cpu / images}


def decode(model: ClipModel, paths: list[str], batch_size: int, workers: int) -> int:
    items = (Item(p, p) for p in paths)
    batches = in_order(
        chunks(items, 0, batch_size, 1 << 40), prepare_images(model.preprocess), workers=workers, ahead=2 * workers
    )
    return sum(len(batch.ids) for batch in batches)


def infer(model: ClipModel, pixels: np.ndarray, images: int, workers: int) -> int:
    """``model.encode_pixels`` over ``images`` images, ``workers`` calls at a time."""
    batches = -(-images // len(pixels))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: model.encode_pixels(pixels), range(batches)))
    return batches * len(pixels)


def embed(bundle: Path, folder: Path, out: Path, batch_size: int, workers: int, count: int) -> int:
    summary = embed_dataset(bundle, out, sources=[str(folder)], batch_size=batch_size, workers=workers)
    if summary.embedded != count:
        raise SystemExit(f"embed wrote {summary.embedded} rows for {count} images")
    out.unlink()
    return count


def int8_copy(bundle: Path, work: Path) -> Path:
    """``bundle`` with both graphs quantized as `clip-onnx export --precision int8` does, without its gate."""
    import dataclasses

    from clip_onnx.bundle import BundleWriter, read_bundle
    from clip_onnx.export.int8 import quantize_int8

    target = work / f"{bundle.name}-ungated-int8"
    if (target / "manifest.json").is_file():
        return target
    source = read_bundle(bundle)
    graphs = dict(source.manifest.graphs)
    with BundleWriter(target) as writer:
        for name in source.manifest.files:
            if name not in {g.file for g in graphs.values()}:
                writer.add_file(name, source.path / name)
        for tower, graph in graphs.items():
            done = quantize_int8(source.path / graph.file, writer.dir / graph.file)
            graphs[tower] = dataclasses.replace(graph, precision="int8", lowering={"gate": "off", **done})
        writer.commit(dataclasses.replace(source.manifest, graphs=graphs))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--int8", action="store_true", help="quantize both towers first, ungated")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument(
        "--long-side",
        type=int,
        nargs=2,
        default=(560, 1120),
        metavar=("MIN", "MAX"),
        help="range of the JPEGs' long side in px",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--infer-images",
        type=int,
        default=None,
        help="images per inference-only measurement (default: as many as the folder holds)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clip-onnx-embed-bench")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: print only)")
    args = parser.parse_args()

    bundle = int8_copy(args.bundle, args.work) if args.int8 else args.bundle
    folder = args.work / f"photos-{args.images}-{args.long_side[0]}-{args.long_side[1]}"
    paths = make_photos(folder, args.images, tuple(args.long_side))
    model = ClipModel.load(bundle, towers=("visual",), batch_size=args.batch_size)
    single = ClipModel.load(bundle, towers=("visual",), batch_size=args.batch_size, threads=1)
    pixels = model.preprocess(paths[: args.batch_size])
    for warm in (model, single):  # first-run allocations stay out of the clock
        warm.encode_pixels(pixels)
    infer_images = args.infer_images or len(paths)
    repeats = []
    for r in range(args.repeats):
        row = {
            "decode_preprocess": measure(lambda: decode(model, paths, args.batch_size, args.workers)),
            "inference_default_threads": measure(lambda: infer(model, pixels, infer_images, 1)),
            "inference_1_thread_x_workers": measure(lambda: infer(single, pixels, infer_images, args.workers)),
            "embed": measure(
                lambda: embed(bundle, folder, args.work / "embed.parquet", args.batch_size, args.workers, len(paths))
            ),
        }
        repeats.append(dict(row, **ratios(row)))
        print(
            f"repeat {r + 1}: "
            + ", ".join(
                f"{k} {v['images_per_s']:.1f} img/s ({v['cpu_ms_per_image']:.1f} CPU ms/img)" for k, v in row.items()
            )
            + "; "
            + ", ".join(f"{k} {repeats[-1][k]:.3f}" for k in ratios(row)),
            file=sys.stderr,
        )
    stages = [k for k in repeats[0] if isinstance(repeats[0][k], dict)]
    median = {
        k: {m: statistics.median(row[k][m] for row in repeats) for m in ("images_per_s", "cpu_ms_per_image")}
        for k in stages
    }
    median.update(ratios(median))
    for key in ratios(median):
        median[f"{key}_median_of_repeats"] = statistics.median(row[key] for row in repeats)
    result = {
        "bundle": str(args.bundle),
        "int8": args.int8,
        "image_size": model.preprocess.spec.image_size,
        "images": len(paths),
        "long_side": list(args.long_side),
        "infer_images": infer_images,
        "jpeg_mb": round(sum(os.path.getsize(p) for p in paths) / 2**20, 1),
        "batch_size": args.batch_size,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "pillow": Image.__version__,
        "repeats": repeats,
        "median": median,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


def ratios(row: dict) -> dict:
    """embed / min(decode+preprocess, inference), on wall-clock rates and on CPU-time rates.

    ``ratio`` takes ONNX Runtime's default threads as the inference-only rate (how `ClipModel`
    and `clip-onnx bench` run a model); ``strict_ratio`` the faster of the two inference rows.
    The CPU-time ratio (CPU ms per image of the slowest stage over embed's) is what other
    people's jobs on a shared machine disturb least.
    """
    decode, default, single, embed = (
        row[k] for k in ("decode_preprocess", "inference_default_threads", "inference_1_thread_x_workers", "embed")
    )
    rate, cpu = "images_per_s", "cpu_ms_per_image"
    return {
        "ratio": embed[rate] / min(decode[rate], default[rate]),
        "strict_ratio": embed[rate] / min(decode[rate], max(default[rate], single[rate])),
        "cpu_ratio": max(decode[cpu], default[cpu]) / embed[cpu],
        "strict_cpu_ratio": max(decode[cpu], min(default[cpu], single[cpu])) / embed[cpu],
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


if __name__ == "__main__":
    main()
