"""Re-render `clip-onnx serve-bench --out` results: the Markdown table from serve-bench.json, rewritten in place.

.venv/bin/python benchmarks/serve_report.py benchmarks/2026-12-07-serving/*/serve-bench.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from clip_onnx.triton import bench_report
from clip_onnx.triton.loadgen import Row

FIELDS = {f.name for f in dataclasses.fields(Row)}


def main(paths: list[str]) -> None:
    for path in map(Path, paths):
        record = json.loads(path.read_text(encoding="utf-8"))
        rows = []
        for data in record["rows"]:
            row = Row(**{k: v for k, v in data.items() if k in FIELDS})
            row.batch_sizes = {int(k): v for k, v in (row.batch_sizes or {}).items()} or None
            rows.append(row)
        table = bench_report(rows)
        path.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
        print(f"## {path.parent.name}\n\n{table}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
