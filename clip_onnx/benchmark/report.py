"""Benchmark output: raw JSON with a machine header, a Markdown table, and an optional PNG plot."""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
from pathlib import Path

from clip_onnx.machine import cpu_flags, cpu_model, versions

log = logging.getLogger(__name__)

# CPU features the int8 and bf16 ratios depend on: VNNI int8 dot products, AMX tiles, native bf16.
CPU_FLAGS = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_PACKAGES = ("clip-onnx", "numpy", "pillow", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "tensorrt")


def machine_header(torch) -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": {flag: flag in cpu_flags() for flag in CPU_FLAGS},
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": gpu,
        "versions": versions(_PACKAGES),
    }


def markdown(result: dict) -> str:
    h = result["header"]
    lines = [
        f"Benchmark of `{result['source']}`{' (random weights)' if result['random_weights'] else ''}, "
        f"{h['date'][:10]}, {h['cpu']} ({h['cores']} cores){', GPU ' + h['gpu'] if h['gpu'] else ''}; "
        f"{result['warmup']} warm-ups, {result['repeat']} interleaved repeats.",
        _flags_note(h),
        *_bundles_note(result),
        *_text_note(result),
        "",
        "| tower | batch | backend | median ms | p90 ms | min ms | items/s | speedup vs torch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["stats"]:
        speed = f"{s['speedup_vs_torch']:.2f}x" if s.get("speedup_vs_torch") else "n/a"
        lines.append(
            f"| {s['tower']} | {s['batch']} | {s['backend']} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | "
            f"{s['min_ms']:.1f} | {s['items_per_s']:.1f} | {speed} |"
        )
    if result.get("accuracy"):
        reference = next(iter(result["accuracy"].values())).get("reference", "torch")
        lines += [
            "",
            f"| backend | visual min cosine vs {reference} | textual min cosine vs {reference} "
            "| top-1 agreement | within its gate |",
            "|---|---|---|---|---|",
        ]
        for name, acc in result["accuracy"].items():
            top1 = f"{acc['top1_agreement']:.1%}" if "top1_agreement" in acc else "n/a"
            gate = f"{acc['gate']}: {'yes' if acc['passed'] else 'no'}" if "gate" in acc else "n/a (no gate)"
            cosines = [f"{acc[t]['min_cosine']:.6f}" if t in acc else "n/a" for t in ("visual", "textual")]
            lines.append(f"| {name} | {cosines[0]} | {cosines[1]} | {top1} | {gate} |")
    if result.get("cold_start"):
        cold, rss = result["cold_start"], result["peak_rss_mb"]
        lines += [
            "",
            "| worker | cold start s (import + load + first call) | vs torch | peak RSS MB | vs torch |",
            "|---|---|---|---|---|",
        ]
        for name, seconds in cold.items():
            mb = rss.get(name, float("nan"))
            lines.append(
                f"| {name} | {seconds:.2f} | {seconds / cold.get('torch', float('nan')):.2f} | {mb:.0f} | "
                f"{mb / rss.get('torch', float('nan')):.2f} |"
            )
    if result.get("pipeline"):
        from clip_onnx.benchmark.pipeline import markdown as pipeline_markdown

        lines += pipeline_markdown(result["pipeline"])
    for name, why in result.get("skipped", {}).items():
        lines.append(f"\nSkipped {name}: {why}.")
    for name in result.get("ungated", []):
        lines.append(
            f"\nRow {name} is ungated: its graphs were lowered without the accuracy gate, so its speed is that of "
            "every tower lowered; the accuracy table says what they give, and no gate vouches for them."
        )
    return "\n".join(lines) + "\n"


def _flags_note(header: dict) -> str:
    flags = header.get("cpu_flags", {})
    return "CPU flags: " + (", ".join(f"{f} {'yes' if on else 'no'}" for f, on in flags.items()) or "unknown") + "."


def _bundles_note(result: dict) -> list[str]:
    return [f"Bundle `{b['label']}`: {b['path']} ({b['precisions']})." for b in result.get("bundles", [])]


def _text_note(result: dict) -> list[str]:
    tokens = result.get("text_tokens")
    if not tokens or all(n == tokens["torch"] for n in tokens["runtime"].values()):
        return []
    cut = ", ".join(f"{n} at batch {b}" for b, n in tokens["runtime"].items())
    return [
        "",
        f"Text: eager torch runs the padded {tokens['torch']} tokens, as its library does; the runtime "
        f"backends cut each batch to its longest prompt, as ClipModel does ({cut} tokens). The "
        f"`textual-padded` rows time every backend on the padded ids: the same work.",
    ]


def write_reports(result: dict, out: Path) -> list[Path]:
    written = [out / "bench.json", out / "bench.md"]
    written[0].write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    written[1].write_text(markdown(result), encoding="utf-8")
    png = _plot(result, out / "bench.png")
    return written + ([png] if png else [])


def _plot(result: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; skipping the plot (pip install 'clip-onnx[bench]')")
        return None
    towers = list(dict.fromkeys(s["tower"] for s in result["stats"]))  # textual-padded too, where timed
    fig, axes = plt.subplots(1, len(towers), figsize=(5 * len(towers), 4), squeeze=False)
    axes = axes[0]
    for ax, tower in zip(axes, towers, strict=True):
        for backend in dict.fromkeys(s["backend"] for s in result["stats"]):
            rows = sorted(
                (s["batch"], s["median_ms"]) for s in result["stats"] if s["tower"] == tower and s["backend"] == backend
            )
            ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", label=backend)
        title = tower if tower == "textual-padded" else f"{tower} tower"
        ax.set(title=title, xlabel="batch", ylabel="median latency, ms", xscale="log", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{result['source']} on {result['header']['cpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
