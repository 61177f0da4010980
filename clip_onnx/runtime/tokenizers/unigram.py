"""SentencePiece-Unigram encoding (XLM-R style) from a Hugging Face ``tokenizer.json``, in plain Python.

Reproduces the ``tokenizers`` library's ``Tokenizer.encode_batch`` with
truncation and padding to ``context_length`` (what open_clip's ``HFTokenizer``
asks for: ``padding="max_length", truncation=True, max_length=context_length``)
id for id, and its attention mask. How ``tokenizers`` encodes, which this
module mirrors:

* The file is read as tokenizers reads it (``hf_file``): vocab scores go through
  serde_json's default float parser, which rounds twice and leaves about one
  score in seven one ulp away from Python's ``float()`` (enough to flip ties).
  ``scores="exact"`` reads them correctly rounded instead: that is what a
  tokenizer built in memory from Python floats holds (transformers 5 builds
  XLM-R's that way), and a file saved from it writes each score as its shortest
  round-trip literal.
* Added tokens (``added_tokens``, e.g. ``<s>``, ``<pad>``, ``<mask>``) are cut
  out of the raw text first, leftmost-longest, and become their ids; those
  marked ``normalized`` are looked for, by their normalized content, in the
  normalized text. ``lstrip``/``rstrip`` swallow the whitespace beside them.
  Empty pieces are dropped.
* Each remaining piece is normalized as a whole by the ``normalizer`` (``hf_normalizers``):
  ``Sequence``, ``NFC``, ``NFD``, ``NFKC``, ``NFKD``, ``Lowercase`` (per
  character), ``Strip``, ``StripAccents``, ``Replace`` (string or regex) and
  ``Prepend`` and ``Precompiled`` (the SentencePiece charsmap of the real XLM-R
  file, see ``charsmap``) are implemented; any other normalizer is refused
  with a BundleError naming it.
* Pre-tokenizers (``hf_pipeline``): ``Metaspace`` replaces " " by "▁", prepends "▁" to a piece
  that does not start with one (``prepend_scheme`` "always"; "first": only at
  the start of the text; "never") and splits before every "▁" (``split``);
  ``WhitespaceSplit`` splits on White_Space runs and drops them; a
  ``Sequence`` of these runs them in order (transformers 5 writes
  ``[WhitespaceSplit, Metaspace]`` for XLM-R).
* The ``Unigram`` model picks the segmentation of best total score (Viterbi;
  on equal scores the path found first wins: earlier start, then shorter
  piece). A character with no one-character piece becomes an unknown node
  scored ``min(score) - 10``; consecutive nodes carrying the unk id are fused
  into one piece, which is the unk id unless the fused string is itself in the
  vocabulary (with ``byte_fallback``, its UTF-8 bytes as ``<0xNN>`` pieces when
  all of them exist).
* Truncation keeps the first ``context_length - added`` ids, where ``added``
  is the number of ids the post-processor adds (2 for ``<s> $A </s>``), so
  ``</s>`` always ends the row; ``TemplateProcessing``, ``RobertaProcessing``
  or ``BertProcessing`` (``hf_pipeline``) then add them, and padding fills with the pad id (1,
  ``<pad>``, for XLM-R) where the attention mask is 0. A "<pad>" typed in the
  text keeps mask 1, as in tokenizers (open_clip's HF text encoder would mask
  it, since it masks by ``ids != pad_id``).

Known differences: NFC/NFD/NFKC/NFKD run on this Python's ``unicodedata``
with the code points tokenizers' older tables do not know left alone
(``hf_normalizers._LEGACY_UNASSIGNED``); ``Lowercase`` uses Python's case tables, so the 55
code points that gained a lowercase after Python 3.11's Unicode 14 stay as they
are here. Optional ``clean`` in the spec ("whitespace", "lower",
"canonicalize") first applies open_clip's text cleaning (see ``text_cleaning``), as
open_clip's ``HFTokenizer`` does with "whitespace" before the HF tokenizer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clip_onnx.errors import BundleError, InputError
from clip_onnx.runtime.tokenizers.base import CachedTokenizer, check_int, check_utf8
from clip_onnx.runtime.tokenizers.hf_file import SCORE_PARSERS, AddedToken, AddedTokenSplitter, read_json
from clip_onnx.runtime.tokenizers.hf_normalizers import build_normalizer
from clip_onnx.runtime.tokenizers.hf_pipeline import build_post_processor, build_pre_tokenizer
from clip_onnx.runtime.tokenizers.text_cleaning import check_clean_mode, clean_text

logger = logging.getLogger(__name__)

_K_UNK_PENALTY = 10.0


class UnigramTokenizer(CachedTokenizer):
    """Texts -> {"input_ids", "attention_mask"}, int64 [N, context_length], matching ``tokenizers``."""

    kind = "unigram"
    spec_keys = ("context_length", "pad_id", "clean", "scores")
    with_attention_mask = True

    def __init__(self, path, *, context_length=77, pad_id=None, clean=None, scores="serde_json"):
        check_int("context_length", context_length, 1)
        if not isinstance(scores, str) or scores not in SCORE_PARSERS:
            raise BundleError(f"scores must be one of {sorted(SCORE_PARSERS)}, got {scores!r}")
        check_clean_mode(clean, self.kind, optional=True)
        self.path = Path(path)
        self.context_length = context_length
        self.clean = clean
        where = f"tokenizer file {str(self.path)!r}"
        data = read_json(self.path, SCORE_PARSERS[scores])
        self._read_model(data.get("model"), where)
        added = [AddedToken(t, where) for t in data.get("added_tokens") or []]
        self._normalize = build_normalizer(data.get("normalizer"), where)
        self._raw_added = AddedTokenSplitter([t for t in added if not t.normalized])
        self._normalized_added = AddedTokenSplitter([t for t in added if t.normalized], self._normalize)
        self._pre = build_pre_tokenizer(data.get("pre_tokenizer"), where)
        self._before, self._after = build_post_processor(data.get("post_processor"), where)
        n_added = len(self._before) + len(self._after)
        if context_length < n_added:
            raise BundleError(f"context_length {context_length} leaves no room for the {n_added} special ids")
        self._max_content = context_length - n_added
        self.pad_id = self._find_pad_id(data, pad_id, added, where)
        super().__init__()
        logger.debug("loaded Unigram tokenizer %s: %d pieces", self.path, len(self._pieces))

    def _read_model(self, model: Any, where: str) -> None:
        if not isinstance(model, dict):
            raise BundleError(f"{where} has no 'model' object")
        if model.get("type") != "Unigram":
            raise BundleError(f"{where}: model type {model.get('type')!r} is not 'Unigram'")
        vocab = model.get("vocab")
        if not isinstance(vocab, list) or not vocab:
            raise BundleError(f"{where}: Unigram model has no vocab")
        pieces: dict[str, tuple[int, float]] = {}
        min_score = float("inf")
        try:
            for i, (piece, score) in enumerate(vocab):
                score = float(score)
                if not isinstance(piece, str):
                    raise TypeError
                pieces[piece] = (i, score)  # a later duplicate wins, as in tokenizers' token_to_ids
                min_score = min(min_score, score)
        except (TypeError, ValueError):
            raise BundleError(f"{where}: Unigram vocab entry #{i} is not [piece, score]") from None
        # A piece found in the lattice carries the id and score of its last occurrence.
        self._pieces = {p: hit for p, hit in pieces.items() if p}
        # Longest piece per first character bounds the prefix search.
        self._max_len: dict[str, int] = {}
        for piece in self._pieces:
            self._max_len[piece[0]] = max(len(piece), self._max_len.get(piece[0], 0))
        unk_id = model.get("unk_id")
        if unk_id is not None and (not isinstance(unk_id, int) or not 0 <= unk_id < len(vocab)):
            raise BundleError(f"{where}: unk_id {unk_id!r} is not an index into the vocab of {len(vocab)}")
        self.unk_id: int | None = unk_id
        self._unk_score = min_score - _K_UNK_PENALTY
        self._byte_fallback = bool(model.get("byte_fallback", False))

    def _find_pad_id(self, data: Mapping[str, Any], pad_id: object, added: list[AddedToken], where: str) -> int:
        if pad_id is not None:
            if not isinstance(pad_id, int) or isinstance(pad_id, bool):
                raise BundleError(f"pad_id must be an int, got {pad_id!r}")
            return pad_id
        padding = data.get("padding")
        if isinstance(padding, dict) and isinstance(padding.get("pad_id"), int):
            return padding["pad_id"]
        for token in added:
            if token.content == "<pad>":
                return token.id
        if "<pad>" in self._pieces:
            return self._pieces["<pad>"][0]
        raise BundleError(f"{where}: no <pad> token and no pad_id in the spec")

    def _row_uncached(self, text: str) -> tuple[int, ...]:
        return (*self._before, *self._encode_text(text)[: self._max_content], *self._after)

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        if self.clean is not None:
            text = clean_text(text, self.clean)
        check_utf8(text)  # tokenizers refuses these too: a Rust String cannot hold a lone surrogate
        out: list[int] = []
        first = True  # the piece that starts the text, for prepend_scheme "first"
        for raw, token in self._raw_added.split(text):
            if token is not None:
                out.append(token.id)
                first = False
                continue
            normalized = self._normalize(raw) if self._normalize else raw
            for piece, token2 in self._normalized_added.split(normalized):
                if token2 is not None:
                    out.append(token2.id)
                else:
                    for word in self._pre_tokenize(piece, first):
                        out.extend(self._encode_word(word))
                first = False
            first = False
        return tuple(out)

    def _pre_tokenize(self, text: str, at_start: bool) -> list[str]:
        words = [(text, at_start)]
        for step in self._pre:
            words = step(words)
        return [word for word, _ in words if word]

    def _encode_word_uncached(self, text: str) -> tuple[int, ...]:
        """Viterbi segmentation of one pre-token, as tokenizers' Unigram.encode_optimized."""
        if not text:
            return ()
        out: list[int] = []
        for piece in self._fuse_unknown(text, *self._best_path(text)):
            out.extend(self._piece_ids(piece))
        return tuple(out)

    def _best_path(self, text: str) -> tuple[list[int], list[int]]:
        """For each end position, where the best segmentation's last piece starts and that piece's id.

        On equal scores the path found first wins: earlier start, then shorter piece.
        """
        n = len(text)
        pieces, max_len, unk_id, unk_score = self._pieces, self._max_len, self.unk_id, self._unk_score
        best = [0.0] * (n + 1)
        start_of = [-1] * (n + 1)
        id_of = [0] * (n + 1)
        for i in range(n):
            here = best[i]
            has_single = False
            for j in range(i + 1, min(n, i + max_len.get(text[i], 0)) + 1):
                hit = pieces.get(text[i:j])
                if hit is None:
                    continue
                candidate = hit[1] + here
                if start_of[j] < 0 or candidate > best[j]:
                    best[j], start_of[j], id_of[j] = candidate, i, hit[0]
                has_single = has_single or j == i + 1
            if not has_single:
                if unk_id is None:
                    raise InputError(f"character {text[i]!r} is not in the vocabulary and the model has no unk_id")
                candidate = unk_score + here
                if start_of[i + 1] < 0 or candidate > best[i + 1]:
                    best[i + 1], start_of[i + 1], id_of[i + 1] = candidate, i, unk_id
        return start_of, id_of

    def _fuse_unknown(self, text: str, start_of: list[int], id_of: list[int]) -> list[str]:
        """The best path's pieces, walked back from the end; consecutive nodes with the unk id fuse into one."""
        strings: list[str] = []
        end = len(text)
        fused_end = -1
        while end > 0:
            begin = start_of[end]
            if self.unk_id is not None and id_of[end] == self.unk_id:
                if fused_end < 0:
                    fused_end = end
            else:
                if fused_end >= 0:
                    strings.append(text[end:fused_end])
                    fused_end = -1
                strings.append(text[begin:end])
            end = begin
        if fused_end >= 0:
            strings.append(text[0:fused_end])
        strings.reverse()
        return strings

    def _piece_ids(self, piece: str) -> list[int]:
        """A piece's id; an unknown one's UTF-8 bytes as <0xNN> pieces with ``byte_fallback``, else the unk id."""
        hit = self._pieces.get(piece)
        if hit is not None:
            return [hit[0]]
        if self._byte_fallback:
            byte_ids = [self._pieces.get(f"<0x{b:02X}>") for b in piece.encode("utf-8")]
            if all(b is not None for b in byte_ids):
                return [b[0] for b in byte_ids]  # type: ignore[index]  # none is None, checked above
        return [self.unk_id]  # type: ignore[list-item]  # a fused unknown piece exists only with an unk id
