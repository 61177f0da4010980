"""What a family adapter hands to the exporter: two towers (or one classifier graph) plus the data a bundle needs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from clip_onnx.manifest.records import trimmable
from clip_onnx.preprocess_spec import PreprocessSpec


@dataclass(frozen=True)
class Tower:
    """One ONNX graph to export: a module mapping named inputs to one embedding output.

    ``dynamic_axes`` maps each input name to {axis index: symbolic name}.
    """

    name: str
    module: torch.nn.Module
    input_names: tuple[str, ...]
    output_name: str
    dynamic_axes: Mapping[str, Mapping[int, str]]

    @property
    def trimmable(self) -> bool:
        """Whether a text batch may be cut to its longest prompt (the manifest's ``GraphSpec.trimmable``)."""
        return trimmable(self.dynamic_axes)


@dataclass
class ExportableModel:
    """A loaded model, ready to export: everything family-specific is resolved here.

    ``kind="classifier"`` is a single image graph (``visual``, producing logits over
    the classes named in ``labels``, in logit order); ``textual`` is then None and
    the text-side fields are unused.
    """

    name: str
    family: str
    source: str
    visual: Tower
    textual: Tower | None
    logit_scale: float
    embed_dim: int
    preprocess: PreprocessSpec
    tokenizer: Mapping  # the manifest's tokenizer spec; its "file" entry names a file in tokenizer_files
    tokenizer_files: Mapping[str, Path]
    # Texts the parity gate encodes: realistic prompts in the model's language.
    sample_texts: tuple[str, ...]
    # Turns texts into the textual tower's input arrays (the runtime tokenizer).
    tokenize: Callable[[list[str]], Mapping[str, np.ndarray]] = field(repr=False, default=None)
    config: Mapping = field(default_factory=dict)
    kind: str = "clip"
    # Zero-shot prompt templates written to the manifest; None leaves the runtime's default (RuCLIP's).
    templates: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    # Pictures of the model's own domain for the fp16/int8 gates, (count, seed) -> PIL images;
    # None uses clip_onnx.synthetic.synthetic_images.  On out-of-domain pictures a small trained
    # model scores every prompt nearly alike, and top-1 agreement measures ties.
    gate_images: Callable[[int, int], list] | None = field(repr=False, default=None)


@runtime_checkable
class FamilyAdapter(Protocol):
    """What each adapter module under ``clip_onnx.export.families`` provides (FAMILIES lists them).

    ``claims`` answers cheaply, without loading weights, whether a source (hub id, local directory) is in
    the family's native layout; ``load`` builds the ExportableModel, with random weights where asked
    (the architecture from the registry's spec or the source's config).
    """

    def claims(self, source: str) -> bool: ...

    def load(self, source: str, *, random_weights: bool = False) -> ExportableModel: ...
