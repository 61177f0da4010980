"""`clip-onnx embed` over webdataset shards against the same pictures as a folder, and `--decode draft`
against the exact decode, side by side in one run.

    python benchmarks/shards_decode.py BUNDLE [--fidelity-bundle B32] [--repeats 3] [--out results.json]

Three measurements, each repeat running the pair it compares back to back (in
alternating order) in this process, so that other jobs on a shared machine
disturb both alike; medians and the per-repeat ratios are reported:

- shards: ``embed_dataset`` over a folder of photo-like JPEGs (long side
  560-1120 px) and over the very same files packed into tar shards of 250;
  the claim checked is shards >= 0.9 x folder items/s;
- draft speed: ``embed_dataset`` over 6 MP photo-like JPEGs (3000 x 2000, or
  2000 x 3000), ``--decode exact`` against ``--decode draft``; the claim is
  draft >= 2.5 x exact items/s;
- draft fidelity: the cosine of every draft vector against its exact vector
  (min, 10th percentile, mean), for BUNDLE and each ``--fidelity-bundle``.

The figures go to docs/datasets.md and benchmarks/NOTES.md with the CPU named.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from embed_throughput import make_photos  # noqa: E402 - the benchmark's own photo maker

from clip_onnx.batch import EmbedOptions, embed_dataset  # noqa: E402
from clip_onnx.machine import describe, summary  # noqa: E402
from clip_onnx.runtime import ClipModel  # noqa: E402


def pack_shards(paths: list[str], folder: Path, per_shard: int) -> str:
    """``paths`` as tar shards of ``per_shard`` samples (KEY.jpg); returns their brace range."""
    folder.mkdir(parents=True, exist_ok=True)
    count = -(-len(paths) // per_shard)
    for shard in range(count):
        target = folder / f"{shard:05d}.tar"
        if not target.exists():
            with tarfile.open(target, "w") as tar:
                for path in paths[shard * per_shard : (shard + 1) * per_shard]:
                    tar.add(path, arcname=Path(path).name)
    return str(folder / f"{{00000..{count - 1:05d}}}.tar")


def rate(bundle: Path, source: str, out: Path, options: EmbedOptions, count: int) -> float:
    started = time.perf_counter()
    summary = embed_dataset(bundle, out, options, sources=[source])
    seconds = time.perf_counter() - started
    if summary.embedded != count:
        raise SystemExit(f"embed wrote {summary.embedded} rows for {count} items of {source}")
    out.unlink()
    return count / seconds


def side_by_side(repeats: int, runs: dict) -> dict:
    """items/s of each named run, ``repeats`` times, in alternating order; medians and per-repeat ratios."""
    names = list(runs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            samples[name].append(runs[name]())
    first, second = names
    ratios = [b / a for a, b in zip(samples[first], samples[second], strict=True)]
    return {
        "items_per_s": samples,
        "median_items_per_s": {name: statistics.median(values) for name, values in samples.items()},
        f"{second}/{first}": {"per_repeat": ratios, "median": statistics.median(ratios)},
    }


def fidelity(bundle: Path, paths: list[str]) -> dict:
    model = ClipModel.load(bundle, towers=("visual",))
    exact = model.encode_image(paths)
    draft = model.encode_image(paths, decode="draft")
    cosine = (exact * draft).sum(axis=1)
    return {
        "bundle": str(bundle),
        "images": len(paths),
        "min": float(cosine.min()),
        "p10": float(np.quantile(cosine, 0.1)),
        "mean": float(cosine.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--fidelity-bundle", type=Path, action="append", default=[])
    parser.add_argument("--images", type=int, default=1000, help="photos for the shards-vs-folder run")
    parser.add_argument("--large", type=int, default=120, help="6 MP photos for the draft runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clip-onnx-shards-bench")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    photos = make_photos(args.work / "photos", args.images, (560, 1120))
    shards = pack_shards(photos, args.work / "shards", 250)
    large = make_photos(args.work / "large", args.large, (3000, 3000), seed=1)
    out = args.work / "out.parquet"
    exact, draft = EmbedOptions(), EmbedOptions(decode="draft")
    machine = describe()
    report = {"machine": summary(machine), "cores": os.cpu_count(), "python": platform.python_version()}
    report["bundle"] = str(args.bundle)
    report["shards"] = side_by_side(
        args.repeats,
        {
            "folder": lambda: rate(args.bundle, str(args.work / "photos"), out, exact, len(photos)),
            "shards": lambda: rate(args.bundle, shards, out, exact, len(photos)),
        },
    )
    report["draft"] = side_by_side(
        args.repeats,
        {
            "exact": lambda: rate(args.bundle, str(args.work / "large"), out, exact, len(large)),
            "draft": lambda: rate(args.bundle, str(args.work / "large"), out, draft, len(large)),
        },
    )
    report["fidelity"] = [fidelity(b, large) for b in [args.bundle, *args.fidelity_bundle]]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
