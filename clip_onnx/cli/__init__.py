"""The `clip-onnx` command line: thin wrappers over the library, imported lazily."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import MappingProxyType

import click

from clip_onnx.cli.datasets import embed, ray_embed
from clip_onnx.cli.export import bench, build_engine, demo, export
from clip_onnx.cli.openai import openai_frontend
from clip_onnx.cli.serve import serve, triton
from clip_onnx.cli.servebench import serve_bench
from clip_onnx.cli.shared import BACKEND_OPTION
from clip_onnx.cli.verify import verify
from clip_onnx.errors import ClipOnnxError

# An optional package a command imports -> the extra that brings it. A worker installs clip-onnx alone, and
# `clip-onnx export` there must say what to install, not print a ModuleNotFoundError traceback.
EXTRA_OF = MappingProxyType(
    {
        "torch": "export",
        "onnx": "export",
        "onnxscript": "export",
        "onnxconverter_common": "export",
        "youtokentome": "export",
        "huggingface_hub": "export",
        "open_clip": "open_clip",
        "transformers": "chinese_clip",
        "timm": "timm",
        "tensorrt": "tensorrt",
        "cupy": "tensorrt",
        "matplotlib": "bench",
        "tritonclient": "triton",
        "google": "triton",  # protobuf
        "pyarrow": "data",
        "ray": "ray",
        "fastapi": "serve",
        "starlette": "serve",
        "uvicorn": "serve",
        "pydantic": "serve",
    }
)


def missing_extra(exc: ModuleNotFoundError, command: str | None) -> str | None:
    """The one-line advice for a command that needs an optional package this install lacks, or None."""
    package = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(package)
    if extra is None:
        return None
    advice = f"pip install 'clip-onnx[{extra}]'"
    if package == "torch":
        advice = f"install a torch build for this machine (CPU or CUDA), then {advice}"
    return f"`clip-onnx {command or ''}` needs the {package} package, which is not installed here: {advice}"


class _Group(click.Group):
    """Turns our typed errors, OS errors on the paths people give and missing extras into one line, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            message = missing_extra(exc, ctx.invoked_subcommand)
            if message is None:
                raise
            click.secho(f"error: {message}", fg="red", err=True)
            sys.exit(1)
        except ClipOnnxError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)
        except OSError as exc:  # an output directory that is missing, read-only or a file, a full disk...
            where = f": {exc.filename}" if exc.filename else ""
            click.secho(f"error: {exc.strerror or exc}{where}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="clip-onnx")
def cli(verbose: int) -> None:
    """Export CLIP-family models to verified ONNX bundles and run them without PyTorch.

    \b
    clip-onnx models                               list registered models
    clip-onnx export ruclip-demo -o bundles/demo   export, check parity, write a bundle
    clip-onnx classify bundles/demo a.jpg --labels кошка собака
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


@cli.command()
def models() -> None:
    """List the registered model names and their sources."""
    from clip_onnx.registry import list_models

    for spec in list_models():
        where = spec.hub_id or "embedded in the package"
        click.echo(f"{spec.name:32s} {spec.family:8s} {where}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--labels",
    "labels",
    required=True,
    multiple=True,
    help="Candidate labels: repeat the option, or give them space-separated after one --labels.",
)
@click.option("--templates", multiple=True, help="Prompt templates with '{}' (default: the model's own).")
@BACKEND_OPTION
def classify(bundle: Path, images, labels, templates, backend: str) -> None:
    """Zero-shot classify IMAGES against LABELS and print the probabilities."""
    from clip_onnx.runtime import ClipModel

    model = ClipModel.load(bundle, backend=backend)
    result = model.classify(list(images), list(labels), templates=list(templates) or None)
    for path, probs in zip(images, result.probs, strict=True):
        ranked = sorted(zip(result.labels, probs, strict=True), key=lambda lp: -lp[1])
        click.echo(f"{path}: " + ", ".join(f"{label} {p:.3f}" for label, p in ranked))


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=5, show_default=True, help="How many classes to print per image.")
@BACKEND_OPTION
def predict(bundle: Path, images, top_k: int, backend: str) -> None:
    """Classify IMAGES with a classifier bundle (e.g. a timm CLIP-ViT) and print the top classes."""
    from clip_onnx.runtime import ClipClassifier

    result = ClipClassifier.load(bundle, backend=backend).predict(list(images), top_k=top_k)
    for path, labels, probs in zip(images, result.labels, result.probs, strict=True):
        click.echo(f"{path}: " + "; ".join(f"{label} {p:.3f}" for label, p in zip(labels, probs, strict=True)))


# The exporter's, dataset and serving commands live in their own modules, which keeps this one short enough to read.
COMMANDS = (export, demo, build_engine, bench, embed, ray_embed, triton, serve, openai_frontend, serve_bench, verify)
for command in COMMANDS:
    cli.add_command(command)


def main() -> None:
    # `--labels кошка собака` reads naturally; click takes one value per option, so
    # split the words that follow --labels into repeated options before parsing.
    cli.main(args=_expand_multi(sys.argv[1:], "--labels"), prog_name="clip-onnx")


def _expand_multi(argv: list[str], option: str) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] == option:
            i += 1
            values = []
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            out += values[:1] + [x for v in values[1:] for x in (option, v)]
            continue
        i += 1
    return out
