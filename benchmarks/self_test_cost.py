"""What the load-time self-test costs: ClipModel.load with and without it, in fresh processes, interleaved.

    python benchmarks/self_test_cost.py BUNDLE [--repeat 7]

Each sample is a new interpreter that imports the runtime, loads the bundle
(``self_test=False`` or ``True``), then encodes one picture and one prompt, the
first work a worker does. Prints the medians and p90s: load, first call, and
their sum, so the part of the self-test that only moves ONNX Runtime's
first-run cost earlier shows as such.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from clip_onnx import machine

PROBE = """
import json, sys, time
started = time.perf_counter()
from clip_onnx.runtime import ClipModel
from clip_onnx.synthetic import synthetic_images
imported = time.perf_counter()
model = ClipModel.load(sys.argv[1], self_test=sys.argv[2] == "on")
loaded = time.perf_counter()
model.encode_image(synthetic_images(1, seed=3)); model.encode_text(["кошка"])
done = time.perf_counter()
print(json.dumps({"import": imported - started, "load": loaded - imported, "first_call": done - loaded}))
"""


def sample(bundle: str, self_test: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, bundle, self_test], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    sample(args.bundle, "off")  # page cache warm for both
    for _ in range(args.repeat):
        for mode in runs:
            runs[mode].append(sample(args.bundle, mode))
    print(f"{args.bundle} on {machine.summary(machine.describe())}, {args.repeat} interleaved fresh processes each")
    for key in ("load", "first_call"):
        for mode, samples in runs.items():
            values = sorted(s[key] for s in samples)
            p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
            median = statistics.median(values) * 1000
            print(f"  {key:10s} self-test {mode:3s}: median {median:7.1f} ms, p90 {p90 * 1000:7.1f} ms")
    load = {mode: statistics.median(s["load"] for s in samples) for mode, samples in runs.items()}
    both = {mode: statistics.median(s["load"] + s["first_call"] for s in samples) for mode, samples in runs.items()}
    extra, share = (load["on"] - load["off"]) * 1000, (load["on"] / load["off"] - 1) * 100
    print(f"  self-test at load: +{extra:.1f} ms ({share:.1f}% of the load)")
    extra, share = (both["on"] - both["off"]) * 1000, (both["on"] / both["off"] - 1) * 100
    print(f"  load + first call: +{extra:.1f} ms ({share:.1f}%)")


if __name__ == "__main__":
    main()
