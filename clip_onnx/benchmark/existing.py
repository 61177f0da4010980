"""``clip-onnx bench --bundle``: bundles timed as they are, each labelled by its graphs' precision.

A user compares their fp32, fp16 and int8 bundles of one model (and eager torch,
where the source is given) in one interleaved run, without exporting again.
The bundles must hold the same model, so that every backend sees the same inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clip_onnx.benchmark.backends import bundle_backend
from clip_onnx.bundle import Bundle, read_bundle
from clip_onnx.errors import InputError
from clip_onnx.gate_feeds import FeedMaker
from clip_onnx.runtime import opener

log = logging.getLogger(__name__)


@dataclass
class ExistingBundles:
    bundles: list[Bundle]
    labels: list[str]
    runtime: str = "onnxruntime"

    def check_source(self, model) -> None:
        """Refuse a SOURCE whose inputs differ from the bundles': eager torch would time other work."""
        for bundle in self.bundles:
            m = bundle.manifest
            if m.kind != model.kind or m.preprocess != model.preprocess:
                raise InputError(
                    f"bundle {bundle.path} holds {m.model.name!r} ({m.kind.value}), whose inputs "
                    f"differ from SOURCE {model.name!r}; give the source it was exported from"
                )

    def feed_maker(self) -> FeedMaker:
        """The benchmark's feeds, made from the first bundle alone (no torch, no source)."""
        return FeedMaker.of_bundle(self.bundles[0])

    def backends(self, cut: Callable | None, max_batch: int) -> list:
        """One row per bundle on the runtime backend, held to the gate of its most reduced graph."""
        made = []
        for bundle, label in zip(self.bundles, self.labels, strict=True):
            precisions = _precisions(bundle).values()
            gate = next((p for p in ("int8", "fp16") if p in precisions), "fp32")
            made.append(bundle_backend(label, bundle, self.runtime, gate, cut, max_batch))
        return made

    def ungated(self) -> list[str]:
        """The labels of bundles with a graph lowered without the accuracy gate."""
        return [
            label
            for bundle, label in zip(self.bundles, self.labels, strict=True)
            if not all(g.gated for g in bundle.manifest.graphs.values())
        ]

    def records(self) -> list[dict]:
        return [
            {
                "label": label,
                "path": str(b.path),
                "precisions": ", ".join(f"{t} {p}" for t, p in _precisions(b).items()),
            }
            for b, label in zip(self.bundles, self.labels, strict=True)
        ]


def open_bundles(paths: Sequence[Path], runtime: str = "onnxruntime") -> ExistingBundles:
    """Read (and verify) ``paths``; labels ``<runtime>-<precision>``, the folder name added where two clash."""
    opener(runtime)  # an unknown backend fails before any bundle is read
    bundles = [read_bundle(p) for p in paths]
    names = {(b.manifest.model.name, b.manifest.kind.value) for b in bundles}
    if len(names) > 1:
        raise InputError(f"--bundle paths hold different models {sorted(names)}; bench compares one model's bundles")
    labels = [f"{runtime}-{_label(b)}" for b in bundles]
    labels = [
        f"{label} ({b.path.name})" if labels.count(label) > 1 else label
        for label, b in zip(labels, bundles, strict=True)
    ]
    if len(set(labels)) < len(labels):
        raise InputError(f"--bundle paths {[str(p) for p in paths]} repeat a bundle; give each once")
    return ExistingBundles(bundles, labels, runtime)


def _precisions(bundle: Bundle) -> dict[str, str]:
    return {tower: graph.precision for tower, graph in bundle.manifest.graphs.items()}


def _label(bundle: Bundle) -> str:
    """ "int8" when every graph is int8; "visual-int8-textual-fp32" for a bundle the gate lowered in part."""
    precisions = _precisions(bundle)
    if len(set(precisions.values())) == 1:
        return next(iter(precisions.values()))
    return "-".join(f"{t}-{p}" for t, p in precisions.items())
