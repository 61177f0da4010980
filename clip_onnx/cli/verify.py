"""`clip-onnx verify`: replay a bundle's self-test on this machine and say whether its vectors can be trusted here."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from clip_onnx.cli.shared import BACKEND_OPTION


def proof_lines(manifest) -> list[str]:
    """What the manifest says was proven where: the gates' machine and each int8 graph's kernel proof."""
    from clip_onnx import machine

    lines = []
    if manifest.gate_machine is not None:
        lines.append(f"exported and gated on {machine.summary(dict(manifest.gate_machine))}")
    for tower, graph in manifest.graphs.items():
        proof = graph.lowering.get("int8_kernels")
        if proof is not None:
            lines.append(
                f"{tower} int8: {proof['matmuls']} integer MatMuls, largest s8 pair sum {proof['max_pair_sum']} "
                f"<= {proof['pair_limit']}: the same sums on {', '.join(proof['covers'])}"
            )
    if manifest.self_test is not None and manifest.self_test.export_cosine:
        figures = ", ".join(f"{t} {c:.6f}" for t, c in manifest.self_test.export_cosine.items())
        lines.append(
            f"self-test ({len(manifest.self_test.images)} pictures, {len(manifest.self_test.texts)} "
            f"prompts) on the export machine: min cosine {figures}"
        )
    return lines


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@BACKEND_OPTION
@click.option(
    "--providers",
    multiple=True,
    help="ONNX Runtime execution providers, best first (repeat the option), e.g. "
    "--providers CUDAExecutionProvider --providers CPUExecutionProvider. Default: the CPU's.",
)
def verify(bundle: Path, backend: str, providers: tuple[str, ...]) -> None:
    """Check BUNDLE on this machine: sha256 of every file, then its self-test through the whole runtime path.

    \b
    The bundle carries a few pictures and prompts with eager PyTorch's outputs on
    them. They run here through decoding, preprocessing, the tokenizer, the graphs
    (or TensorRT plans) and the execution provider, and each tower's lowest cosine
    against eager is judged by the gates the tower went through (fp32, then fp16 or
    int8, then the TensorRT engine gate), their angles added. Prints each tower's
    figures, the export machine's and this one's; exits 0 if every tower passes, 1 if not.
    """
    from clip_onnx.bundle import read_bundle
    from clip_onnx.runtime import ClipClassifier, ClipModel, run_self_test

    kind = read_bundle(bundle, verify=False).kind
    opener = ClipClassifier if kind == "classifier" else ClipModel
    model = opener.load(bundle, backend=backend, providers=list(providers) or None, self_test=False)
    click.echo(f"{bundle}: every file matches its sha256")
    for line in proof_lines(model.bundle.manifest):
        click.echo(line)
    report = run_self_test(model)
    for line in report.lines():
        click.echo(line)
    if not report.passed:
        click.secho(
            "FAIL: this machine does not reproduce the bundle's vectors; do not serve it here", fg="red", err=True
        )
        sys.exit(1)
    click.echo("PASS")
