"""The runner contract every inference backend implements.

A runner wraps one graph.  ``infer`` validates the feed (names, dtypes, ranks)
before dispatching, so a backend only implements ``_run``.  Runners are
context managers; ``close`` releases the backend's resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from clip_onnx.errors import InputError


@dataclass(frozen=True)
class RunnerOptions:
    """How to open a runner: ONNX Runtime's execution providers (best first) and intra-op threads per session."""

    providers: tuple[Any, ...] | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        threads = self.threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be an int >= 1 or None, got {threads!r}")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input: its name, dtype and shape."""

    name: str
    dtype: np.dtype
    # Fixed sizes as ints, symbolic axes as None.
    shape: tuple[int | None, ...]


class Runner:
    """One graph on one backend: ``infer(feed) -> {output name: array}``, the feed checked before it runs.

    A backend sets ``inputs`` and ``output_names`` and implements ``_run``;
    ``infer`` refuses, with an InputError naming the input, a feed whose names,
    dtypes or ranks and fixed sizes differ from the graph's. Use a runner as a
    context manager, or call ``close``, to release the backend's resources.
    """

    # Which backend runs the graph ("onnxruntime", "tensorrt"), and on what: an execution provider, a GPU.
    backend: str = ""
    device: str = ""
    inputs: tuple[TensorSpec, ...] = ()
    output_names: tuple[str, ...] = ()
    # Shapes as the graph declares them, in output_names order; ClipModel checks the embedding width at load.
    output_shapes: tuple[tuple[int | None, ...], ...] = ()

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs by name for ``feed`` (exactly the graph's inputs, as numpy arrays)."""
        self._check(feed)
        return self._run({spec.name: feed[spec.name] for spec in self.inputs})

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the checked feed on the backend."""
        raise NotImplementedError

    def close(self) -> None:
        """Release backend resources; the runner cannot be used afterwards."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, feed: Mapping[str, np.ndarray]) -> None:
        expected = {spec.name for spec in self.inputs}
        if set(feed) != expected:
            raise InputError(f"graph takes inputs {sorted(expected)}, got {sorted(feed)}")
        for spec in self.inputs:
            array = feed[spec.name]
            if not isinstance(array, np.ndarray) or array.dtype != spec.dtype:
                got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
                raise InputError(f"input {spec.name!r} must be a {np.dtype(spec.dtype).name} array, got {got}")
            if array.ndim != len(spec.shape) or any(
                d is not None and d != a for d, a in zip(spec.shape, array.shape, strict=True)
            ):
                want = ["?" if d is None else d for d in spec.shape]
                raise InputError(f"input {spec.name!r} has shape {list(array.shape)}, graph expects {want}")
