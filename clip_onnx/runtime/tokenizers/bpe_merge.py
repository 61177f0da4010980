"""Byte-pair merging, shared by the youtokentome and CLIP BPE tokenizers.

Both apply a ranked list of rules "left + right -> merged" to a word's symbols.
youtokentome merges the pair of lowest rank first, the leftmost on ties, one
pair at a time; open_clip merges in rounds (the lowest rank present, every
occurrence left to right). The two agree whenever every rule's parts exist
before the rule (see :func:`merge_order_is_causal`), so the faster one-at-a-time
heap serves both there.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

Symbol = TypeVar("Symbol", bound=Hashable)


def merge_lowest_first(
    seq: Sequence[Symbol], ranks: Mapping[tuple[Symbol, Symbol], int], rules: Sequence[tuple[Symbol, Symbol, Symbol]]
) -> list[Symbol]:
    """``seq`` with merges applied, the lowest rule index first and the leftmost on ties, until none applies.

    ``ranks`` maps a pair to the index of its rule in ``rules`` (a later
    duplicate winning is the caller's choice). A heap of (rank, position) gives
    that order exactly; entries made stale by earlier merges are skipped when
    popped rather than removed.
    """
    out: list[Any] = list(seq)  # merged-away slots become None
    n = len(out)
    nxt = [*range(1, n), -1]
    prv = list(range(-1, n - 1))
    heap = [(r, i) for i in range(n - 1) if (r := ranks.get((seq[i], seq[i + 1]))) is not None]
    heapq.heapify(heap)
    while heap:
        r, i = heapq.heappop(heap)
        j = nxt[i]
        left, right, merged = rules[r]
        if j == -1 or out[i] != left or out[j] != right:
            continue  # stale: one side was merged away since this entry was pushed
        out[i], out[j] = merged, None
        k = nxt[j]
        nxt[i], nxt[j] = k, -1
        if k != -1:
            prv[k] = i
            pushed = ranks.get((merged, out[k]))
            if pushed is not None:
                heapq.heappush(heap, (pushed, i))
        h = prv[i]
        if h != -1:
            pushed = ranks.get((out[h], merged))
            if pushed is not None:
                heapq.heappush(heap, (pushed, h))
    return [s for s in out if s is not None]


def merge_in_rounds(word: list[str], ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """open_clip's ``SimpleTokenizer.bpe``: merge the lowest-ranked pair present everywhere, left to right, repeat."""
    while len(word) > 1:
        best = min(zip(word, word[1:], strict=False), key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        first, second = best
        merged, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


def merge_order_is_causal(merges: Sequence[tuple[str, str]], base: Iterable[str]) -> bool:
    """True when every rule's two parts exist before it: are ``base`` symbols or made by an earlier rule.

    Then merging the lowest (rank, position) first, one pair at a time, is the
    same as open_clip's rounds, because a merge only creates pairs of higher
    rank. CLIP's vocabulary is causal; any other file falls back to the rounds.
    """
    made = dict.fromkeys(base, -1)
    for rank, (a, b) in enumerate(merges):
        if made.get(a, rank) >= rank or made.get(b, rank) >= rank:
            return False
        made.setdefault(a + b, rank)
    return True
