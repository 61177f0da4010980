"""open_clip's text towers as exportable graphs: CLIP text transformers (cut to the longest prompt where that
is exact) and HF text towers fed the caller's attention mask; and the check that a wrapper is open_clip's
own encode_text."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from open_clip.hf_model import ClsLastHiddenStatePooler, ClsPooler, HFTextEncoder, MeanPooler
from open_clip.model import CLIP

from clip_onnx.errors import ExportError, ModelSourceError
from clip_onnx.export.families.base import Tower

log = logging.getLogger(__name__)

# Poolings whose position does not move when trailing padding is cut (text_global_pool, HF poolers).
_CUT_SAFE_POOLS = ("argmax", "eos", "first")
_CUT_SAFE_HF_POOLERS = (MeanPooler, ClsPooler, ClsLastHiddenStatePooler)


class _CutView:
    """``model`` as encode_text sees it, with the positional embedding and causal mask cut to ``seq`` positions.

    Running open_clip's own encode_text on this view keeps its whole code path
    and changes only the two tensors sized for the full context.
    """

    def __init__(self, model: CLIP, seq):
        self._model = model
        self.positional_embedding = model.positional_embedding[:seq]
        self.attn_mask = model.attn_mask[:seq, :seq]

    def __getattr__(self, name):
        return getattr(self._model, name)


class ClipTextTower(torch.nn.Module):
    """open_clip ``CLIP.encode_text``; with ``cut``, on ids of any length up to the context."""

    def __init__(self, model: CLIP, cut: bool):
        super().__init__()
        self.model = model
        self.cut = cut

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.cut:
            return type(self.model).encode_text(_CutView(self.model, input_ids.shape[1]), input_ids)
        return self.model.encode_text(input_ids)


class HfTextTower(torch.nn.Module):
    """open_clip's HFTextEncoder path (``encode_text``) with the caller's attention mask.

    HFTextEncoder derives its mask as ``input_ids != pad_token_id``. Setting the
    ids the caller masked to the pad id hands the caller's mask to that same code
    path: for tokenizer output (mask 0 exactly at the padding) the ids do not
    change, and a literal "<pad>" in a text stays masked, as open_clip masks it.
    """

    def __init__(self, model, pad_id: int):
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids.masked_fill(attention_mask == 0, self.pad_id))


def text_tower(model) -> tuple[Tower, dict]:
    """The textual Tower and its manifest record: pooling rule and whether the sequence axis is symbolic."""
    if isinstance(model, CLIP):
        pool = model.text_pool_type
        rule = f"eos id {model.text_eos_id}" if pool == "eos" else pool
        reason = None
        if model.attn_mask is None:
            reason = "no causal mask: every position attends to the padding, so cutting it changes the result"
        elif pool not in _CUT_SAFE_POOLS:
            reason = f"pooling {pool!r} reads a position that moves when trailing padding is cut"
        module, names = ClipTextTower(model, cut=reason is None), ("input_ids",)
    elif isinstance(getattr(model, "text", None), HFTextEncoder):
        pooler = model.text.pooler
        rule = f"{type(pooler).__name__} over attention_mask"
        cut_safe = type(pooler) in _CUT_SAFE_HF_POOLERS
        reason = None if cut_safe else f"{type(pooler).__name__} reads the padding positions"
        module, names = HfTextTower(model, int(model.text.config.pad_token_id)), ("input_ids", "attention_mask")
    else:
        raise ModelSourceError(
            f"open_clip text tower {type(getattr(model, 'text', model)).__name__} is not supported; "
            f"this adapter exports CLIP text transformers and HF text towers"
        )
    axes = {0: "batch", 1: "seq"} if reason is None else {0: "batch"}
    sequence = {"dynamic": reason is None, "pooling": rule, **({"reason": reason} if reason else {})}
    return Tower("textual", module, names, "text_embeds", {n: axes for n in names}), sequence


def check_text_tower(model, tower: Tower, tokens: Mapping[str, np.ndarray], cut: bool, pad_id: int) -> None:
    """The exported wrapper must be open_clip's encode_text: on padded ids and, if cut, on ids cut to the longest.

    The parity gate compares the graph with the wrapper, so a wrapper that
    drifted from open_clip would pass it; this compares the wrapper with open_clip.
    """
    feed = [torch.from_numpy(tokens[n]) for n in tower.input_names]
    used = tokens["attention_mask"] if "attention_mask" in tokens else tokens["input_ids"] != pad_id
    length = int(used.any(axis=0).nonzero()[0].max()) + 1
    with torch.no_grad():
        expected = model.encode_text(torch.from_numpy(tokens["input_ids"]))
        runs = {"padded": tower.module(*feed)}
        if cut:
            runs[f"cut to {length}"] = tower.module(*(t[:, :length] for t in feed))
    scale = max(1.0, float(expected.abs().max()))
    for what, got in runs.items():
        err = float((got - expected).abs().max())
        log.info("text tower vs open_clip encode_text, %s ids: max abs %.3g", what, err)
        if not err <= 1e-5 * scale:
            raise ExportError(
                f"the {tower.name} wrapper differs from open_clip's encode_text on {what} ids "
                f"by {err:.3g} (outputs up to {scale:.3g})"
            )
