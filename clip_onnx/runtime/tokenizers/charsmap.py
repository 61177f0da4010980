"""SentencePiece's precompiled normalization charsmap, applied as ``tokenizers``' ``Precompiled`` normalizer.

The real XLM-R ``tokenizer.json`` (and every tokenizer converted from a
SentencePiece model) normalizes with the ``precompiled_charsmap`` blob that
SentencePiece builds for its ``nmt_nfkc`` rule: NFKC plus a few NMT fixes,
compiled into a darts-clone double-array trie over UTF-8 bytes. The blob is
``uint32 trie_size`` (little endian), ``trie_size`` bytes of trie units, then a
pool of NUL-terminated replacement strings that the trie's values point into.

``tokenizers`` (through the ``spm_precompiled`` crate) applies it in a way that
is not simply "longest match", and this module mirrors it exactly:

* the text is walked by extended grapheme clusters (UAX #29);
* a cluster shorter than 6 UTF-8 bytes is first looked up whole, and the trie
  search returns the *shortest* key that is a prefix of it, whose replacement
  then stands for the whole cluster;
* otherwise, or when nothing matched, each character is looked up on its own
  and kept as it is when nothing matches;
* a NUL byte ends the key, as in darts-clone.

Grapheme clusters come from the third-party ``regex`` module's ``\\X``: the
standard library has no grapheme segmentation, and writing UAX #29 out here
would need property tables Python's ``unicodedata`` does not carry. It is
imported only when a bundle uses this normalizer.
"""

from __future__ import annotations

import base64
import binascii
import functools

import numpy as np

from clip_onnx.errors import BundleError

_WHOLE_CLUSTER_MAX_BYTES = 6  # spm_precompiled tries a whole cluster only below this size
_CACHE_SIZE = 65536


def _offset(unit: int) -> int:
    return (unit >> 10) << ((unit & (1 << 9)) >> 6)


def _grapheme_pattern():
    try:
        import regex
    except ImportError:
        raise BundleError(
            "this tokenizer normalizes with a SentencePiece 'Precompiled' charsmap, which needs the 'regex' "
            "package for grapheme clusters; install it with: pip install 'clip-onnx[multilingual]'"
        ) from None
    return regex.compile(r"\X")


class PrecompiledCharsmap:
    """str -> str with a SentencePiece ``precompiled_charsmap``, as ``tokenizers.normalizers.Precompiled``."""

    def __init__(self, blob: bytes, where: str = "precompiled_charsmap"):
        if len(blob) < 4:
            raise BundleError(f"{where}: charsmap of {len(blob)} bytes is too short")
        trie_size = int.from_bytes(blob[:4], "little")
        if trie_size % 4 or trie_size == 0 or 4 + trie_size > len(blob):
            raise BundleError(f"{where}: charsmap trie size {trie_size} does not fit a blob of {len(blob)} bytes")
        self._units = np.frombuffer(blob, dtype="<u4", count=trie_size // 4, offset=4).tolist()
        self._pool = blob[4 + trie_size :]
        try:
            self._pool.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"{where}: charsmap replacement strings are not UTF-8") from None
        self._clusters = _grapheme_pattern()
        self.transform = functools.lru_cache(maxsize=_CACHE_SIZE)(self._transform)

    @classmethod
    def from_base64(cls, text, where: str = "precompiled_charsmap") -> PrecompiledCharsmap:
        if not isinstance(text, str) or not text:
            raise BundleError(f"{where}: 'precompiled_charsmap' must be a non-empty base64 string")
        try:
            blob = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BundleError(f"{where}: 'precompiled_charsmap' is not valid base64") from None
        return cls(blob, where)

    def _first_value(self, key: bytes) -> int | None:
        """Value of the shortest trie key that is a prefix of ``key`` (darts-clone's first common prefix)."""
        units = self._units
        pos = _offset(units[0])
        for byte in key:
            if byte == 0:
                return None
            pos ^= byte
            if pos >= len(units):
                return None
            unit = units[pos]
            if unit & 0x800000FF != byte:
                return None
            pos ^= _offset(unit)
            if (unit >> 8) & 1:
                return units[pos] & 0x7FFFFFFF if pos < len(units) else None
        return None

    def _transform(self, chunk: str) -> str | None:
        start = self._first_value(chunk.encode("utf-8"))
        if start is None or start > len(self._pool):
            return None
        end = self._pool.find(b"\0", start)
        return self._pool[start : end if end >= 0 else len(self._pool)].decode("utf-8", "replace")

    def __call__(self, text: str) -> str:
        if not text:
            return text
        out = []
        transform = self.transform
        for cluster in self._clusters.findall(text):
            if len(cluster.encode("utf-8")) < _WHOLE_CLUSTER_MAX_BYTES:
                replaced = transform(cluster)
                if replaced is not None:
                    out.append(replaced)
                    continue
            for ch in cluster:
                replaced = transform(ch)
                out.append(ch if replaced is None else replaced)
        return "".join(out)
