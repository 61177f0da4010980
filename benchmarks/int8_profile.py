"""ONNX Runtime's op profile of one tower graph: kernel time per op type (benchmarks/NOTES.md, "int8 on CPU").

    python benchmarks/int8_profile.py BUNDLE visual|textual [GRAPH] [--runs N]

Feeds what `clip-onnx bench` feeds: one synthetic picture (visual) or 8 sample prompts padded to the
context (textual), made from BUNDLE's manifest; GRAPH defaults to the bundle's own graph of that tower.
Threads: CLIP_ONNX_THREADS, as for the runtime.
"""

import argparse
import collections
import json
import os
from pathlib import Path

import onnxruntime as ort

from clip_onnx.bundle import read_bundle
from clip_onnx.runtime.backends.onnxruntime import default_session_options
from clip_onnx.runtime.preprocess import ImagePreprocessor
from clip_onnx.runtime.tokenizers import load_tokenizer
from clip_onnx.synthetic import synthetic_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("tower", choices=["visual", "textual"])
    parser.add_argument("graph", type=Path, nargs="?")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    bundle = read_bundle(args.bundle, verify=False)
    m = bundle.manifest
    if args.tower == "visual":
        feed = {"pixel_values": ImagePreprocessor(m.preprocess)(synthetic_images(1, 7))}
    else:
        texts = [m.sample_texts[i % len(m.sample_texts)] + f" {i}" for i in range(8)]
        feed = load_tokenizer(m.tokenizer, bundle.path)(texts)
    graph = args.graph or bundle.graph_path(args.tower)
    options = default_session_options()
    options.enable_profiling = True
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    warmup = 2
    for _ in range(args.runs + warmup):
        session.run(None, feed)
    trace = session.end_profiling()
    events = json.loads(Path(trace).read_text())
    os.unlink(trace)
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][warmup:]
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= runs[0]["ts"]:
            per_op[e["args"]["op_name"]] += e["dur"]
    kernels = sum(per_op.values())
    print(
        f"{graph} ({args.tower}): model_run mean {sum(e['dur'] for e in runs) / len(runs) / 1000:.1f} ms, "
        f"kernels {kernels / len(runs) / 1000:.1f} ms"
    )
    for op, us in per_op.most_common(14):
        print(f"  {op:28s} {us / len(runs) / 1000:7.2f} ms {us / kernels:6.1%}")


if __name__ == "__main__":
    main()
