"""What an export is asked to do, as two frozen option objects: the CLI builds them and the library takes them.

Torch-free: every choice is checked here, before a model that can take minutes
to load is loaded, and each error names the option as the CLI spells it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from clip_onnx.errors import ExportError
from clip_onnx.thresholds import GATE_IMAGES, PRECISIONS

DEFAULT_OPSET = 18
# What torch.onnx.export(dynamo=True) really writes with torch 2.13: 18 natively, 17 and 19-25 through
# onnxscript's version converter.  Below 17 it silently keeps 18; above 25 it writes graphs ONNX Runtime
# rejects.  export_tower still reads the opset back from every written graph.
SUPPORTED_OPSETS = range(17, 26)


@dataclass(frozen=True)
class GateOptions:
    """The fp16/int8 accuracy gate: what it runs on, the thresholds it holds, or that it is off.

    ``images``: a count of built-in pictures, or a folder of your own; ``texts``:
    a file of prompts, one a line; ``min_cosine`` and ``min_agreement`` (a
    fraction, 0.99 = 99%) replace the gate table's row for this export.
    ``enabled=False`` lowers every tower without the gate (the manifest says so).
    """

    images: int | str | os.PathLike = GATE_IMAGES
    texts: str | os.PathLike | None = None
    min_cosine: float | None = None
    min_agreement: float | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise ExportError(f"--min-cosine {self.min_cosine} is not a cosine; give a value in [-1, 1], e.g. 0.995")
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise ExportError(
                f"--min-agreement {self.min_agreement} is not a fraction; give a value in [0, 1] (0.99 for 99%)"
            )

    def given(self) -> list[str]:
        """The options set away from the built-in gate, as the CLI spells them."""
        user_images = self.images if isinstance(self.images, (str, os.PathLike)) else None
        values = (
            ("--gate-images", user_images),
            ("--gate-texts", self.texts),
            ("--min-cosine", self.min_cosine),
            ("--min-agreement", self.min_agreement),
        )
        return [name for name, value in values if value is not None]


@dataclass(frozen=True)
class ExportOptions:
    """One export: the graphs' precision and opset, which gates run, and whether ``out`` may be replaced."""

    precision: str = "fp32"
    opset: int = DEFAULT_OPSET
    check_parity: bool = True
    overwrite: bool = False
    random_weights: bool = False
    gate: GateOptions = field(default_factory=GateOptions)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ExportError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        check_opset(self.opset)
        given = self.gate.given()
        if given and self.precision == "fp32":
            raise ExportError(f"{', '.join(given)} set the fp16/int8 gate; add --precision fp16 or int8, or drop them")
        if given and not self.gate.enabled:
            raise ExportError(f"{', '.join(given)} set the fp16/int8 gate, which is off; turn it on or drop them")

    @property
    def gated(self) -> bool:
        """Whether the fp16/int8 gate runs: a lowered precision with the gate on."""
        return self.precision != "fp32" and self.gate.enabled

    @classmethod
    def from_keywords(cls, **keywords: Any) -> ExportOptions:
        """The keyword API of clip-onnx 0.1 (``gate_images=``, ``min_cosine=``, ``gate=False``, ...) as options."""
        gate_names = {"gate_images": "images", "gate_texts": "texts", "min_cosine": "min_cosine"}
        gate_names.update(min_agreement="min_agreement", gate="enabled")
        own = {f.name for f in fields(cls)} - {"gate"}
        unknown = sorted(set(keywords) - own - set(gate_names))
        if unknown:
            raise TypeError(f"unexpected export option(s) {unknown}; known: {sorted(own | set(gate_names))}")
        gate = GateOptions(**{gate_names[k]: v for k, v in keywords.items() if k in gate_names})
        return cls(**{k: v for k, v in keywords.items() if k in own}, gate=gate)


def check_opset(opset: Any) -> int:
    """``opset`` if torch's exporter writes graphs at it, else ExportError naming the supported range."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"--opset {opset!r} is not supported: this exporter writes ONNX opsets "
            f"{SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})"
        )
    return opset
