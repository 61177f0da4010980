"""The CLI's progress bars: one tqdm bar on stderr that a library call advances by naming each step."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def steps(desc: str, total: int | None = None) -> Iterator[Callable[[str], None]]:
    """A ``progress(step_name)`` callback for the library, drawn as a bar of ``total`` steps on stderr."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="step", file=sys.stderr) as bar:

        def step(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        yield step
