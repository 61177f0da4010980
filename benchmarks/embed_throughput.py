"""Throughput of `clip-onnx embed` over a folder of JPEGs against its two stages measured alone, in one run.

    python benchmarks/embed_throughput.py BUNDLE [--int8] [--images 2000] [--repeats 3] [--out results.json]

Each repeat measures, in this order and in this process:

- decode+preprocess: the embed pipeline's own thread pool reading, decoding
  and preprocessing every file, with no model;
- inference only, two ways, on ready pixel batches of the same batch size and
  as many images as the folder holds: one ``encode_pixels`` call at a time
  with ONNX Runtime's default threads (one per core), and ``--workers``
  concurrent calls on one-thread sessions (the way the pipeline runs the
  model); the faster of the two is the inference-only rate;
- embed: ``clip_onnx.batch.embed_dataset`` over the folder to parquet, the
  library call behind the command, timed end to end (walk, model load,
  pipeline, final write).

The claim checked is embed >= 0.85 x min(decode+preprocess, inference), on the
medians of the repeats.  ``--int8`` first quantizes the bundle's towers without
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


def make_photos(folder: Path, count: int, seed: int = 0) -> list[str]:
    """Photo-sized JPEGs (long side 640-1280 px, quality 90): gradients, shapes and sensor-like noise."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(walk_images(str(folder)))
    if len(existing) == count:
        return existing
    rng = np.random.default_rng(seed)
    for i in range(count):
        long = int(rng.integers(640, 1281))
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
    batches = in_order(chunks(items, 0, batch_size, 1 << 40), prepare_images(model.preprocess), workers=workers,
                       ahead=2 * workers)
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
    from clip_onnx.benchmark.run import _int8_bundle
    from clip_onnx.bundle import read_bundle
    from clip_onnx.export.int8 import quantize_int8

    source = read_bundle(bundle)
    graphs = {t: bundle / source.manifest["graphs"][t]["file"] for t in source.manifest["graphs"]}
    target = work / f"{bundle.name}-ungated-int8"
    if not (target / "manifest.json").is_file():
        _int8_bundle(graphs, target, quantize_int8)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--int8", action="store_true", help="quantize both towers first, ungated")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clip-onnx-embed-bench")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: print only)")
    args = parser.parse_args()

    bundle = int8_copy(args.bundle, args.work) if args.int8 else args.bundle
    folder = args.work / f"photos-{args.images}"
    paths = make_photos(folder, args.images)
    model = ClipModel.load(bundle, towers=("visual",), batch_size=args.batch_size)
    single = ClipModel.load(bundle, towers=("visual",), batch_size=args.batch_size, threads=1)
    pixels = model.preprocess(paths[:args.batch_size])
    for warm in (model, single):  # first-run allocations stay out of the clock
        warm.encode_pixels(pixels)
    repeats = []
    for r in range(args.repeats):
        row = {
            "decode_preprocess": measure(lambda: decode(model, paths, args.batch_size, args.workers)),
            "inference_default_threads": measure(lambda: infer(model, pixels, len(paths), 1)),
            "inference_1_thread_x_workers": measure(lambda: infer(single, pixels, len(paths), args.workers)),
            "embed": measure(lambda: embed(bundle, folder, args.work / "embed.parquet", args.batch_size, args.workers,
                                           len(paths))),
        }
        repeats.append(dict(row, **ratios(row)))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v['images_per_s']:.1f} img/s ({v['cpu_ms_per_image']:.1f} "
                                             "CPU ms/img)" for k, v in row.items())
              + f"; ratio {repeats[-1]['ratio']:.3f}, CPU-time ratio {repeats[-1]['cpu_ratio']:.3f}", file=sys.stderr)
    stages = [k for k in repeats[0] if isinstance(repeats[0][k], dict)]
    median = {k: {m: statistics.median(row[k][m] for row in repeats) for m in ("images_per_s", "cpu_ms_per_image")}
              for k in stages}
    median.update(ratios(median))
    result = {
        "bundle": str(args.bundle), "int8": args.int8, "image_size": model.preprocess.spec.image_size,
        "images": len(paths), "jpeg_mb": round(sum(os.path.getsize(p) for p in paths) / 2**20, 1),
        "batch_size": args.batch_size, "workers": args.workers, "cpus": os.cpu_count(),
        "cpu": _cpu_name(), "python": platform.python_version(), "onnxruntime": _version("onnxruntime"),
        "pillow": Image.__version__, "repeats": repeats, "median": median,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


def ratios(row: dict) -> dict:
    """embed / min(decode+preprocess, the faster inference), on wall-clock rates and on CPU-time rates.

    The CPU-time rate (cpus / CPU seconds per image) is what the stage would reach with the
    machine to itself; it is the figure that other users of a shared machine disturb least.
    """
    def best(metric, of):
        return of(row["inference_default_threads"][metric], row["inference_1_thread_x_workers"][metric])

    wall = row["embed"]["images_per_s"] / min(row["decode_preprocess"]["images_per_s"], best("images_per_s", max))
    slowest = max(row["decode_preprocess"]["cpu_ms_per_image"], best("cpu_ms_per_image", min))
    return {"ratio": wall, "cpu_ratio": slowest / row["embed"]["cpu_ms_per_image"]}


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
