"""TensorRT plan bookkeeping shared by the builder and the runtime: profiles, cache keys, plan records.

Torch-free and TensorRT-free, so it is unit-tested on any machine.  A plan is
only valid for the exact graph, TensorRT build, GPU and profile it was built
for; its key hashes all four, and ``select_plan`` refuses anything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from clip_onnx.errors import BackendError, InputError
from clip_onnx.files import atomic_write_text, sha256_bytes

ENGINE_DIR = "engines"


@dataclass(frozen=True)
class Profile:
    """Optimization profile ranges for the symbolic axes: batch and, where dynamic, sequence length."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 64
    min_seq: int = 1
    opt_seq: int | None = None
    max_seq: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise InputError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if self.max_seq is not None and not 1 <= self.min_seq <= (self.opt_seq or self.max_seq) <= self.max_seq:
            raise InputError(
                f"sequence profile must satisfy 1 <= min <= opt <= max, got "
                f"{self.min_seq}/{self.opt_seq}/{self.max_seq}"
            )

    def shapes(self, dims: Sequence[int | str]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes for an input whose dims are ints (static) or names (symbolic).

        Axis 0 is the batch; any other symbolic axis is the sequence, which must then have a profile.
        """
        rows = ([], [], [])
        for axis, dim in enumerate(dims):
            if isinstance(dim, int) and dim > 0:
                ranges = (dim, dim, dim)
            elif axis == 0:
                ranges = (self.min_batch, self.opt_batch, self.max_batch)
            elif self.max_seq is not None:
                ranges = (self.min_seq, self.opt_seq or self.max_seq, self.max_seq)
            else:
                raise InputError(f"input axis {axis} ({dim!r}) is dynamic; give --max-seq for its profile")
            for row, value in zip(rows, ranges, strict=True):
                row.append(value)
        return tuple(tuple(r) for r in rows)


def chunks(total: int, max_batch: int) -> Iterator[slice]:
    """Split ``total`` items into consecutive slices of at most ``max_batch``: no padding, nothing dropped."""
    if max_batch < 1:
        raise InputError(f"max_batch must be >= 1, got {max_batch}")
    for start in range(0, total, max_batch):
        yield slice(start, min(start + max_batch, total))


@dataclass(frozen=True)
class Target:
    """What a plan is bound to besides its graph and profile."""

    product: str  # "tensorrt", or "tensorrt-rtx" for ahead-of-time builds
    version: str
    gpu: str  # device name, or "any" for an ahead-of-time build
    compute_capability: str  # "8.9"


def plan_key(graph_sha256: str, target: Target, profile: Profile) -> str:
    blob = json.dumps({"graph": graph_sha256, "target": asdict(target), "profile": asdict(profile)}, sort_keys=True)
    return sha256_bytes(blob.encode())[:20]


def write_record(bundle_dir: Path, tower: str, key: str, record: Mapping) -> Path:
    path = Path(bundle_dir) / ENGINE_DIR / f"{tower}-{key}.json"
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def records(bundle_dir: Path, tower: str) -> list[dict]:
    out = []
    for path in sorted((Path(bundle_dir) / ENGINE_DIR).glob(f"{tower}-*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise BackendError(
                f"{path}: unreadable plan record ({exc}); delete it and rerun `clip-onnx build-engine`"
            ) from None
        if not isinstance(record, dict):
            raise BackendError(f"{path}: a plan record is a JSON object; delete it and rerun `clip-onnx build-engine`")
        out.append(record)
    return out


def select_plan(candidates: Sequence[Mapping], tower: str, graph_sha256: str, target: Target) -> Mapping:
    """The record of a plan built for exactly this graph and target; BackendError explaining why not otherwise."""
    if not candidates:
        raise BackendError(f"no TensorRT plan for the {tower} tower; build one with `clip-onnx build-engine BUNDLE`")
    reasons = []
    for record in candidates:
        built = Target(**record["target"])
        if record["graph_sha256"] != graph_sha256:
            reasons.append(f"{record['key']}: built from another {tower} graph")
        elif built.product != target.product or built.version != target.version:
            reasons.append(
                f"{record['key']}: built with {built.product} {built.version}, running {target.product} "
                f"{target.version}"
            )
        elif built.compute_capability != target.compute_capability or built.gpu not in (target.gpu, "any"):
            reasons.append(
                f"{record['key']}: built for {built.gpu} (sm {built.compute_capability}), this is "
                f"{target.gpu} (sm {target.compute_capability})"
            )
        else:
            return record
    raise BackendError(
        f"no usable TensorRT plan for the {tower} tower: "
        + "; ".join(reasons)
        + ". Rebuild on this machine with `clip-onnx build-engine BUNDLE`"
    )
