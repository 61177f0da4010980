"""``Tokenizer.token_counts``: what the API reports as usage, checked against the feed the graph is given."""

from __future__ import annotations

import numpy as np
import pytest

from clip_onnx.errors import InputError
from clip_onnx.runtime.tokenizers import TOKENIZERS, load_tokenizer
from tests.tokenizer_files import WRITERS

CONTEXT = 12
# Short texts, one that is truncated to the context, and '!' (id 0, the pad id, in CLIP BPE's byte vocabulary).
TEXTS = ["", "a", "the cat", "кот и мир", "!!", "the photo of the cat " * 8]


def _seen_by_graph(feed: dict[str, np.ndarray], pad_id: int) -> list[int]:
    """Per row: the mask's ones, or the columns up to the last one that is not padding (an end id closes a row)."""
    if "attention_mask" in feed:
        return feed["attention_mask"].sum(axis=1).tolist()
    return [int(np.flatnonzero(row != pad_id).max()) + 1 for row in feed["input_ids"]]


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_counts_are_the_tokens_the_graph_sees(kind, tmp_path):
    path = WRITERS[kind](tmp_path)
    tok = load_tokenizer({"kind": kind, "file": path.name, "context_length": CONTEXT}, path.parent)
    counts = tok.token_counts(TEXTS)
    assert counts.dtype == np.int64 and counts.shape == (len(TEXTS),)
    assert counts.tolist() == _seen_by_graph(tok(TEXTS), tok.pad_id)
    assert counts[-1] == CONTEXT  # truncated, special ids included
    assert counts[0] >= 1  # an empty text still has its start or end id
    with pytest.raises(InputError, match="single str"):
        tok.token_counts("the cat")
