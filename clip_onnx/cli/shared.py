"""What several commands share: the progress bar a library call advances by naming each step, --backend, and
how a server command stops on Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
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


class Stopped(BaseException):
    """Ctrl-C or SIGTERM: leave the serving loop and stop the server."""


def catch_stop_signals(command: str) -> Callable[[], None]:
    """Ctrl-C and SIGTERM raise Stopped once; while the server stops (bounded), further ones are ignored.

    Returns the function that puts the previous handlers back.  A server that handles the signals itself and
    re-raises them after a graceful stop (uvicorn) hands them on to these handlers, so its command exits 0 too.
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum, frame):
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        click.echo(f"{command}: {signal.Signals(signum).name}: stopping...", err=True)
        raise Stopped

    for sig in previous:
        signal.signal(sig, stop)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
