"""Which machine runs a bundle: the CPU features that pick ONNX Runtime's kernels, the versions, the provider.

Dependency-free, for the exporter (where each gate ran, recorded in the
manifest), the runtime's self-test (where it runs now) and the benchmark header.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

# CPU features behind the kernels whose numbers or speed differ: int8 dot products (VNNI, AMX),
# the int16 pair sums of the older int8 path (AVX2, AVX-512BW), native bf16 and fp16 conversion.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16", "f16c")
# ONNX Runtime's x86 u8 x s8 GEMM paths, best first, each with the flag that selects it.
INT8_PATHS = (("amx", "amx_int8"), ("avx512_vnni", "avx512_vnni"), ("avx_vnni", "avx_vnni"))
# Paths that add pairs of u8 x s8 products in a saturating int16 before widening.
PAIRWISE_INT16_PATHS = ("avx512bw", "avx2")
_VERSIONED = ("clip-onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "pillow", "tensorrt")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo; empty where there is none (not Linux)."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def int8_kernel_path(flags: frozenset[str] | None = None) -> str:
    """The u8 x s8 GEMM path ONNX Runtime takes on x86: "amx", "avx512_vnni", "avx_vnni", "avx512bw", "avx2".

    "other" for any other CPU (not x86, or x86 without AVX2), where the int8 proof makes no claim.
    """
    flags = cpu_flags() if flags is None else flags
    for path, flag in INT8_PATHS:
        if flag in flags:
            return path
    if "avx512bw" in flags:
        return "avx512bw"
    return "avx2" if "avx2" in flags else "other"


def describe(provider: str = "CPUExecutionProvider") -> dict[str, Any]:
    """This machine as a manifest or a report records it."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "flags": [f for f in KERNEL_FLAGS if f in flags],
        "int8_kernel": int8_kernel_path(flags),
        "provider": provider,
        "python": platform.python_version(),
        "versions": versions(),
    }


def summary(record: dict[str, Any]) -> str:
    """One line for people: "AMD EPYC (avx2; int8 path avx2), onnxruntime 1.32.0, CPUExecutionProvider"."""
    flags = ", ".join(record.get("flags", ())) or "no listed flags"
    ort = record.get("versions", {}).get("onnxruntime") or record.get("versions", {}).get("onnxruntime-gpu")
    return (
        f"{record.get('cpu', 'unknown CPU')} ({flags}; int8 path {record.get('int8_kernel', 'unknown')}), "
        f"onnxruntime {ort or 'not installed'}, {record.get('provider', 'unknown provider')}"
    )


def versions(names: tuple[str, ...] = _VERSIONED) -> dict[str, str]:
    """The installed version of each distribution in ``names`` that is installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, ...]:
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return ()
