"""The exporter's commands: `export`, `demo`, `build-engine` and `bench` (they import torch when run)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import click

from clip_onnx.cli.shared import steps
from clip_onnx.cli.verify import proof_lines
from clip_onnx.registry import BACKENDS
from clip_onnx.thresholds import PRECISIONS, describe, precision_help


@click.command()
@click.argument("source")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path), help="Bundle directory to create.")
@click.option("--random-weights", is_flag=True, help="Build the named architecture with random weights (no download).")
@click.option("--opset", default=18, show_default=True, help="ONNX opset version.")
@click.option("--no-validate", is_flag=True, help="Skip the eager-vs-ONNX parity gate (the bundle is then unverified).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (atomically).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True, help=precision_help())
@click.option(
    "--gate-images",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="With --precision: gate on your own pictures, a folder (walked recursively) of at least 16 "
    "readable ones, instead of built-in synthetic photos. Unreadable files are skipped with a warning.",
)
@click.option(
    "--gate-texts",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="With --precision: gate on your own prompts, a UTF-8 file with one a line (e.g. your label set).",
)
@click.option(
    "--min-cosine",
    type=float,
    default=None,
    help="With --precision: the lowest cosine a lowered tower may have against fp32, for this export.",
)
@click.option(
    "--min-agreement",
    type=float,
    default=None,
    help="With --precision: the lowest top-1 agreement with fp32, a fraction (0.99 = 99%); 0 lets a "
    "random-weights model through, whose top-1 is a coin toss.",
)
def export(
    source: str,
    out: Path,
    random_weights: bool,
    opset: int,
    no_validate: bool,
    overwrite: bool,
    precision: str,
    gate_images: Path | None,
    gate_texts: Path | None,
    min_cosine: float | None,
    min_agreement: float | None,
) -> None:
    """Export SOURCE to an ONNX bundle and prove it matches eager PyTorch.

    SOURCE is a registered name (see `clip-onnx models`), a Hugging Face hub id,
    or a local directory in the family's native layout (RuCLIP: config.json,
    pytorch_model.bin, bpe.model).
    """
    from clip_onnx.export import ExportOptions, GateOptions, export_bundle

    started = time.perf_counter()
    gate = GateOptions(min_cosine=min_cosine, min_agreement=min_agreement, texts=gate_texts)
    options = ExportOptions(
        precision=precision,
        opset=opset,
        check_parity=not no_validate,
        overwrite=overwrite,
        random_weights=random_weights,
        gate=gate if gate_images is None else replace(gate, images=gate_images),
    )
    with steps("export", total=6 + (precision != "fp32")) as step:
        bundle = export_bundle(source, out, options, progress=step)
    for report in bundle.manifest.parity:
        click.echo(format_parity(report))
    if bundle.manifest.gate_inputs is not None:
        click.echo(format_gate_inputs(bundle.manifest.gate_inputs))
    for line in proof_lines(bundle.manifest):
        click.echo(line)
    precisions = ", ".join(f"{t} {g.precision}" for t, g in bundle.manifest.graphs.items())
    click.echo(f"wrote {bundle.path} ({precisions}) in {time.perf_counter() - started:.1f}s")


def format_gate_inputs(record: Mapping) -> str:
    images, texts, t = record["images"], record.get("texts"), record["thresholds"]
    line = f"gate inputs: {images['count']} {images['source']} images"
    if images.get("skipped"):
        line += f" ({images['skipped']} unreadable skipped)"
    if texts:
        line += f", {texts['count']} {texts['source']} prompts"
    overridden = f" (set: {', '.join(record['overridden'])})" if record["overridden"] else ""
    return line + f"; cosine >= {t['min_cosine']}, top-1 agreement >= {t['min_top1_agreement']:.1%}" + overridden


def format_parity(report: Mapping) -> str:
    t = report["thresholds"]
    bound = f", max abs <= {t['max_abs']}" if t["max_abs"] is not None else ""
    lines = [
        f"parity: {report['stage']} (cosine >= {t['min_cosine']}{bound}, "
        f"top-1 agreement >= {t['min_top1_agreement']:.1%})",
        f"  {'tower':8s} {'batch':>5s} {'seq':>5s} {'max abs':>10s} {'min cosine':>12s}",
    ]
    for r in report["rows"]:
        seq = str(r.get("seq") or "")
        lines.append(f"  {r['tower']:8s} {r['batch']:5d} {seq:>5s} {r['max_abs']:10.2e} {r['min_cosine']:12.8f}")
    lines.append(
        f"  zero-shot top-1 agreement: {report['top1_agreement']:.1%} over {report['images']} images"
        f" -> {'PASS' if report['passed'] else 'FAIL'}"
    )
    return "\n".join(lines)


@click.command()
@click.option(
    "-o",
    "--out",
    "out",
    default="bundles/ruclip-demo",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where to write the demo bundle (replaced if it exists).",
)
@click.option("--images", default=200, show_default=True, help="Held-out pictures for the accuracy check.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
def demo(out: Path, images: int, precision: str) -> None:
    """Export the embedded demo model, verify it, and classify generated pictures without torch.

    ruclip-demo is a small RuCLIP-architecture model trained on generated
    pictures of coloured shapes with Russian captions; the pictures used here
    show colour/shape combinations it never saw in training.
    """
    from clip_onnx.export import run_demo

    with steps("demo", total=5 + (precision != "fp32")) as step:
        bundle, shown, results = run_demo(out, images=images, precision=precision, progress=step)
    for report in bundle.manifest.parity:
        click.echo(format_parity(report))
    click.echo(f"\nbundle: {bundle.path}\n\nzero-shot with the torch-free runtime (pictures of unseen combinations):")
    for task, truth, label, prob in shown:
        mark = "ok" if truth == label else "WRONG"
        click.echo(f"  {task:6s} truth {truth:12s} -> {label:12s} p={prob:.3f}  {mark}")
    click.echo(f"\neager PyTorch vs runtime on {images} held-out pictures:")
    for r in results:
        click.echo(
            f"  {r.task:6s} accuracy runtime {r.runtime_accuracy:.1%}, eager {r.eager_accuracy:.1%}; "
            f"same answer on {r.agreement:.1%}; max probability difference {r.max_prob_diff:.1e}"
        )


@click.command("build-engine")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--min-batch", default=1, show_default=True)
@click.option("--opt-batch", default=8, show_default=True)
@click.option("--max-batch", default=64, show_default=True)
@click.option("--max-seq", type=int, default=None, help="Profile max for a dynamic text sequence axis.")
@click.option("--opt-seq", type=int, default=None, help="Profile optimum for a dynamic sequence axis (default: max).")
@click.option("--workspace", default=4.0, show_default=True, help="Builder workspace, GiB.")
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Persistent timing cache file (default: ~/.cache/clip-onnx/<tensorrt version>.timing).",
)
@click.option(
    "--ahead-of-time",
    type=click.Choice(["SM75", "SM80", "SM86", "SM89", "SM120"]),
    default=None,
    help="Build with TensorRT-RTX for this compute capability without a GPU (a build check; "
    "the standard TensorRT runtime does not load these plans).",
)
@click.option(
    "--no-validate",
    is_flag=True,
    help=f"Skip the engine gate: each plan against its ONNX graph ({describe('engine')}).",
)
def build_engine(
    bundle: Path, min_batch, opt_batch, max_batch, max_seq, opt_seq, workspace, timing_cache, ahead_of_time, no_validate
) -> None:
    """Build one TensorRT plan per tower into BUNDLE/engines/ and check it against the ONNX graph.

    Plans are keyed by graph sha256, TensorRT version, GPU and profile; an
    existing plan with the same key is reused, and the runtime refuses plans
    built for another GPU or TensorRT version. For an FP16 engine export the
    bundle with --precision fp16 (TensorRT >= 10.12 has no FP16 builder flag).
    Each new plan runs the engine gate on synthetic pictures and the bundle's
    sample prompts; a plan that misses it is deleted. Ahead-of-time plans cannot
    run here and are not gated.
    """

    from clip_onnx.engines import Profile
    from clip_onnx.export import build_engines

    profile = Profile(min_batch, opt_batch, max_batch, opt_seq=opt_seq, max_seq=max_seq)
    gated = not (no_validate or ahead_of_time)
    with steps("build-engine", total=5 if gated else 2) as step:
        built = build_engines(
            bundle,
            profile,
            workspace_gib=workspace,
            timing_cache=timing_cache,
            ahead_of_time=ahead_of_time,
            gate=not no_validate,
            progress=step,
        )
    for record in built:
        t = record["target"]
        click.echo(
            f"{record['tower']}: engines/{record['plan']} ({record['plan_bytes'] / 1e6:.1f} MB, "
            f"{t['product']} {t['version']}, {t['gpu']} sm {t['compute_capability']}, fp16: {record['fp16']})"
        )
        if record.get("parity"):
            click.echo(format_parity(record["parity"]))


@click.command()
@click.argument("source", required=False)
@click.option(
    "--bundle",
    "bundles",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Time this existing bundle as it is (repeatable), labelled by its precision; with SOURCE, "
    "beside eager torch in the same run.",
)
@click.option("--random-weights", is_flag=True, help="Build the named architecture with random weights.")
@click.option(
    "--backends",
    default=None,
    help="Comma-separated; unavailable ones (no GPU, no TensorRT, no native bf16) are skipped with a note. "
    "[default: torch,torch-bf16,torch-fp16,onnxruntime,onnxruntime-int8,tensorrt; with --bundle: "
    "torch,torch-bf16 where SOURCE is given]",
)
@click.option(
    "--backend",
    "runtime",
    type=click.Choice(BACKENDS),
    default="onnxruntime",
    show_default=True,
    help="The runtime backend that runs the --bundle bundles (tensorrt: plans are built for this GPU first).",
)
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="Comma-separated batch sizes.")
@click.option("--warmup", default=3, show_default=True)
@click.option("--repeat", default=10, show_default=True)
@click.option("--out", "out", default="results", show_default=True, type=click.Path(path_type=Path))
def bench(
    source: str | None,
    bundles,
    random_weights: bool,
    backends: str | None,
    runtime: str,
    batches: str,
    warmup: int,
    repeat: int,
    out: Path,
) -> None:
    """Time eager PyTorch against the exported graphs, side by side in one interleaved run.

    SOURCE is exported on the fly; --bundle PATH times bundles you already
    have (e.g. your fp32, fp16 and int8 bundles of one model) without
    re-exporting. Writes OUT/bench.json (raw samples and a machine header with
    the CPU flags the ratios depend on), OUT/bench.md and, with matplotlib
    installed, OUT/bench.png.
    """
    from tqdm import tqdm

    from clip_onnx.benchmark import run_benchmark

    if source is None and not bundles:
        raise click.UsageError("give a model SOURCE, one or more --bundle PATH, or both")
    try:
        sizes = [int(b) for b in batches.split(",")]
    except ValueError:
        raise click.BadParameter(f"batch sizes must be integers, got {batches!r}") from None
    names = None if backends is None else [b.strip() for b in backends.split(",") if b.strip()]
    with tqdm(desc="bench", unit="round", file=sys.stderr) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        run_benchmark(
            source,
            out,
            bundles=list(bundles),
            random_weights=random_weights,
            backends=names,
            runtime=runtime,
            batches=sizes,
            warmup=warmup,
            repeat=repeat,
            progress=advance,
        )
    click.echo((out / "bench.md").read_text(encoding="utf-8"))
