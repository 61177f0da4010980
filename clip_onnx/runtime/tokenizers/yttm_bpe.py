"""YouTokenToMe BPE encoding (as used by ruCLIP) in plain Python, without youtokentome.

Reproduces ``yttm.BPE(path).encode([text], output_type=ID, dropout_prob=0.0)``
id for id, and ruCLIP's ``RuCLIPProcessor.encode_text`` on top of it.

How youtokentome encodes, which this module mirrors:

* The text is split into words on its own space set: the bytes that C
  ``isspace`` accepts in the C / C.UTF-8 locale (TAB, LF, VT, FF, CR, SPACE)
  plus U+2581 "▁", its word-start marker. Unicode spaces such as NBSP are
  ordinary characters (unknown ones, usually). Whitespace runs and leading or
  trailing whitespace produce nothing, so "" and "  " encode to [].
* Every word becomes ``[id("▁")] + [id(c) for c in word]``; a run of
  consecutive characters missing from the char table becomes one unk token.
* Merges: among all adjacent pairs that have a rule, the one with the lowest
  rule index is merged first, the leftmost one on ties, until none is left.

The model file is whitespace-separated integers: ``n m``, then n lines
``codepoint id`` (the char table), then m lines ``x y z`` (rule i merges ids x
and y into z; i is its priority), then ``unk pad bos eos``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from clip_onnx.errors import BundleError
from clip_onnx.runtime.tokenizers.base import CachedTokenizer, check_flag, check_int, check_utf8
from clip_onnx.runtime.tokenizers.bpe_merge import merge_lowest_first

logger = logging.getLogger(__name__)

_WORD_START = "\u2581"
# A word is a maximal run of anything outside yttm's is_space set.
_WORD_RE = re.compile("[^\t\n\v\f\r \u2581]+")
# Stands for a run of unknown characters while merging; rule ids are uint32, so no rule names it.
_UNKNOWN = -1


def _load_model(path: Path) -> tuple[dict[str, int], list[tuple[int, int, int]], int]:
    """Parse a yttm model file into (char -> id, rules, unk id)."""
    try:
        fields = path.read_text(encoding="ascii").split()
        values = [int(f) for f in fields]
    except OSError as exc:
        raise BundleError(f"cannot read youtokentome model {str(path)!r}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError):
        raise BundleError(f"youtokentome model {str(path)!r} is not a list of integers") from None
    if len(values) < 2:
        raise BundleError(f"youtokentome model {str(path)!r} is empty or truncated")
    n_chars, n_rules = values[0], values[1]
    expected = 2 + 2 * n_chars + 3 * n_rules + 4
    if n_chars < 0 or n_rules < 0 or len(values) != expected:
        raise BundleError(
            f"youtokentome model {str(path)!r} has {len(values)} numbers, "
            f"expected {expected} for {n_chars} chars and {n_rules} rules"
        )
    table = values[2 : 2 + 2 * n_chars]
    try:
        char2id = {chr(table[i]): table[i + 1] for i in range(0, len(table), 2)}
    except (ValueError, OverflowError):
        raise BundleError(f"youtokentome model {str(path)!r} lists a character outside Unicode") from None
    if _WORD_START not in char2id:
        raise BundleError(f"youtokentome model {str(path)!r} has no id for the word-start mark U+2581")
    flat = values[2 + 2 * n_chars : -4]
    rules = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
    unk_id = values[-4]
    return char2id, rules, unk_id


class YttmBpeTokenizer(CachedTokenizer):
    """Text -> ``{"input_ids"}``, int64 [N, context_length], matching ruCLIP's processor."""

    kind = "yttm_bpe"
    spec_keys = ("context_length", "bos_id", "eos_id", "pad_id", "lowercase")

    def __init__(self, model_path, *, context_length=77, bos_id=2, eos_id=3, pad_id=0, lowercase=True):
        check_int("context_length", context_length, 2, " (room for bos and eos)")
        self.model_path = Path(model_path)
        self.context_length = context_length
        self.bos_id, self.eos_id, self.pad_id = (
            check_int(n, v, 0) for n, v in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id))
        )
        self.lowercase = check_flag("lowercase", lowercase)
        self._char2id, self._rules, self.unk_id = _load_model(self.model_path)
        self._space_id = self._char2id[_WORD_START]
        # Pair -> rule index; a later duplicate wins, as in yttm's rule2id map.
        self._rank = {(x, y): i for i, (x, y, _) in enumerate(self._rules)}
        super().__init__()
        logger.debug(
            "loaded youtokentome model %s: %d chars, %d rules", self.model_path, len(self._char2id), len(self._rules)
        )

    def _row_uncached(self, text: str) -> tuple[int, ...]:
        if self.lowercase:
            text = text.lower()
        ids = self._encode_text(text)[: self.context_length - 2]
        return (self.bos_id, *ids, self.eos_id)

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        check_utf8(text)  # youtokentome fails the same way: it encodes the str to UTF-8 first
        out: list[int] = []
        for word in _WORD_RE.findall(text):
            out.extend(self._encode_word(word))
        return tuple(out)

    def _encode_word_uncached(self, word: str) -> tuple[int, ...]:
        get = self._char2id.get
        seq = [self._space_id]
        for ch in word:
            cid = get(ch)
            if cid is None:
                if seq[-1] == _UNKNOWN:
                    continue
                cid = _UNKNOWN
            seq.append(cid)
        if len(seq) > 1:
            seq = merge_lowest_first(seq, self._rank, self._rules)
        unk = self.unk_id
        return tuple(unk if t == _UNKNOWN else t for t in seq)
