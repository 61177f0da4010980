"""What several commands share: the progress bar a library call advances by naming each step, and --backend."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from clip_onnx.registry import BACKEND_CHOICES


@contextmanager
def steps(desc: str, total: int | None = None) -> Iterator[Callable[[str], None]]:
    """A ``progress(step_name)`` callback for the library, drawn as a bar of ``total`` steps on stderr."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="step", file=sys.stderr) as bar:

        def step(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        yield step


# The runtime commands' --backend: every registered backend, or "auto" (TensorRT where a plan fits this GPU).
BACKEND_OPTION = click.option(
    "--backend",
    type=click.Choice(BACKEND_CHOICES),
    default="onnxruntime",
    show_default=True,
    help="Run the graphs with ONNX Runtime, the TensorRT plans of `clip-onnx build-engine`, or whichever fits (auto).",
)
