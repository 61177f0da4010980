"""ONNX Runtime thread spinning, measured where it matters: right after another session, and for the caller.

    python benchmarks/ort_spinning.py INT8_BUNDLE FP32_BUNDLE [--rounds N] [--threads T]

For each setting (spinning off; on; on and stopped when a run returns), interleaved
round by round: the INT8 visual tower alone, the same right after the FP32 textual
tower ran, and 20 torch 512x512 matmuls right after that (what a caller does next).
Prints medians in ms (benchmarks/NOTES.md, "runtime").
"""

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from clip_onnx.runtime.backends.onnxruntime import default_session_options

SETTINGS = {
    "off": {"session.intra_op.allow_spinning": "0", "session.force_spinning_stop": "0"},
    "on": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "0"},
    "on, stopped after each run": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
}


def _session(path: Path, threads: int, entries: dict) -> ort.InferenceSession:
    options = default_session_options(threads)
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("int8_bundle", type=Path)
    parser.add_argument("fp32_bundle", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    ort.set_default_logger_severity(3)  # overwriting a config entry logs a warning per session
    rng = np.random.default_rng(0)
    image = {"pixel_values": rng.standard_normal((1, 3, 384, 384)).astype(np.float32)}
    ids = rng.integers(4, 1000, (8, 77)).astype(np.int64)
    ids[:, 12] = 3
    sessions = {
        name: (
            _session(args.int8_bundle / "visual.onnx", args.threads, entries),
            _session(args.fp32_bundle / "textual.onnx", args.threads, entries),
        )
        for name, entries in SETTINGS.items()
    }
    torch.set_num_threads(args.threads)
    matrix = torch.randn(512, 512)
    times: dict = {name: {"alone": [], "after the other session": [], "torch after": []} for name in sessions}
    for _ in range(args.rounds):
        for name, (visual, textual) in sessions.items():
            start = time.perf_counter()
            visual.run(None, image)
            times[name]["alone"].append(time.perf_counter() - start)
            textual.run(None, {"input_ids": ids})
            start = time.perf_counter()
            visual.run(None, image)
            times[name]["after the other session"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(20):
                matrix @ matrix
            times[name]["torch after"].append(time.perf_counter() - start)
    for name, columns in times.items():
        figures = ", ".join(f"{k} {np.median(v[3:]) * 1000:.1f}" for k, v in columns.items())
        print(f"spinning {name}: {figures} ms")


if __name__ == "__main__":
    main()
