"""webdataset shards as a dataset source: tar files streamed member by member, samples grouped by key.

A shard is read with the standard library's ``tarfile`` in streaming mode
(``r|*``: plain, gzip, bzip2 or xz), never unpacked to disk, one sample in
memory at a time.  Members group into samples as webdataset groups them: the
key is the path up to the first dot of the last path component, the rest of
the name (lower-cased) names the field; ``__...__`` members and members
without a dot are skipped.  A sample's image is its first jpg, jpeg, png or
webp member, its caption the ``txt`` member, and ``json`` holds metadata such
as img2dataset's ``url``.

Nothing in a shard can stop a run: a sample that cannot be used is an item
that fails with its reason (no image, no caption, a caption that is not UTF-8,
a key seen before), and a shard that is missing, not a tar or damaged is one
failed item whose id is the shard itself.  A damaged shard (truncated, a bad
header) gives the samples before the damage, then that one item saying where
it broke.  ``tarfile`` ends an archive quietly at a header it cannot read;
``_Header`` turns that into damage, so a shard cut at a member boundary is
told from a whole one.
"""

from __future__ import annotations

import errno
import glob
import json
import lzma
import os
import re
import string
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

from clip_onnx.batch.inputs import Item
from clip_onnx.errors import InputError
from clip_onnx.files import FileTooLargeError, NotRegularFileError, open_regular

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")  # the first one a sample has is its image
TEXT_FIELD, META_FIELD = "txt", "json"
# What a shard's json member gives to the output, beside the caption.
META_COLUMNS = ("url", "caption")
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext
_SKIPPED = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta
_INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")
_CHAR_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?$")
_LETTERS = string.ascii_uppercase + string.ascii_lowercase  # bash's order of letter ranges
# What tarfile and the decompressors raise on a damaged archive.
_DAMAGE = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


class ImageText(NamedTuple):
    """One sample for ``--tower both``: its encoded image and its caption."""

    image: object  # bytes, or the exception that says why there is none
    text: object  # str, or an exception


def is_shard_source(source: str) -> bool:
    return not source.startswith("@") and source.lower().endswith(SHARD_SUFFIXES)


def expand_braces(pattern: str) -> list[str]:
    """``pattern`` with every brace group expanded, as bash and webdataset's braceexpand do.

    ``{a,b}`` gives its alternatives and ``{00000..00099}`` (or ``{0..99..3}``,
    ``{a..e}``) a range, zero padding kept when a bound has a leading zero;
    groups nest and multiply, left to right.  A ``{x}`` with neither a comma nor
    a range stays as written.
    """
    found = _first_group(pattern)
    if found is None:
        return [pattern]
    start, end, alternatives = found
    return [out for alt in alternatives for out in expand_braces(pattern[:start] + alt + pattern[end + 1 :])]


def _first_group(text: str) -> tuple[int, int, list[str]] | None:
    """(start, end, alternatives) of the first brace group that expands, or None."""
    for start, char in enumerate(text):
        if char != "{":
            continue
        depth, commas = 0, []
        for end in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 1 and text[end] == ",":
                commas.append(end)
            if depth == 0:
                break
        else:
            return None  # an unmatched "{": nothing after it can expand either
        body = text[start + 1 : end]
        if commas:
            cuts = [start, *commas, end]
            return start, end, [text[a + 1 : b] for a, b in zip(cuts, cuts[1:], strict=False)]
        values = _range(body)
        if values is not None:
            return start, end, values
    return None


def _range(body: str) -> list[str] | None:
    if match := _INT_RANGE.match(body):
        left, right, step = match.groups()
        width = max(len(left), len(right)) if any(_padded(s) for s in (left, right)) else 0
        first, last, stride = int(left), int(right), int(step or 1) or 1
        values = range(first, last + 1, stride) if first < last else range(first, last - 1, -stride)
        return [f"{i:0{width}d}" for i in values]
    if match := _CHAR_RANGE.match(body):
        left, right, step = match.groups()
        first, last, stride = _LETTERS.index(left), _LETTERS.index(right), int(step or 1) or 1
        if first < last:
            return list(_LETTERS[first : last + 1 : stride])
        return list(_LETTERS[first : (last or -len(_LETTERS)) - 1 : -stride])
    return None


def _padded(bound: str) -> bool:
    return bound not in ("0", "-0") and bound.lstrip("-").startswith("0")


def shard_paths(source: str) -> list[str]:
    """The shards ``source`` names: itself if it exists, else its brace expansion, each name with wildcards
    globbed (matches sorted).  A name without wildcards that does not exist is kept, to fail as a missing
    shard; a glob that matches nothing is an InputError (a typo, as for image globs)."""
    if os.path.lexists(source):
        return [source]
    paths = []
    for name in expand_braces(source):
        if not set("*?[") & set(name):
            paths.append(name)
            continue
        matches = sorted(glob.glob(name, recursive=True))
        if not matches:
            raise InputError(f"glob {name!r} matches no shards (quote it so that the shell leaves it to clip-onnx)")
        paths.extend(matches)
    return paths


class ShardSource:
    """The items of the shards one SOURCE names, for one tower ("visual", "textual" or "both")."""

    def __init__(self, source: str, tower: str, max_bytes: int | None):
        self.source, self.tower, self.max_bytes = source, tower, max_bytes
        self.shards = shard_paths(source)

    def items(self) -> Iterator[Item]:
        for shard in self.shards:
            yield from shard_items(shard, self.tower, self.max_bytes)

    def count(self) -> int:
        return sum(count_items(shard) for shard in self.shards)


def shard_items(shard: str, tower: str, max_bytes: int | None, name: str | None = None) -> Iterator[Item]:
    """Items ``NAME:KEY`` of one shard in member order, for ``tower``; its failures as items too.

    ``name`` (default: ``shard``) is the shard as the user gave it, for the ids; ``shard`` is opened.
    """
    name = shard if name is None else name
    wanted = {TEXT_FIELD, META_FIELD} | (set() if tower == "textual" else set(IMAGE_FIELDS))

    def load(tar: tarfile.TarFile, member: tarfile.TarInfo, field: str) -> object:
        if field not in wanted:
            return None  # never read: streaming skips it
        if max_bytes is not None and member.size > max_bytes:
            return FileTooLargeError(member.name, member.size, max_bytes)
        data = tar.extractfile(member)
        return data.read() if data is not None else None

    for key, fields in _samples(shard, "r|*", load, name):
        yield Item(name, fields) if key is None else _item(f"{name}:{key}", fields, tower)


def count_items(shard: str) -> int:
    """How many items ``shard_items`` gives, from the members' headers alone (no data is read)."""
    return sum(1 for _ in _samples(shard, "r:*", lambda tar, member, field: None))


def _item(item_id: str, fields: object, tower: str) -> Item:
    if not isinstance(fields, dict):
        return Item(item_id, fields)  # the key's own failure (a duplicate)
    image = next((fields[f] for f in IMAGE_FIELDS if f in fields), None)
    if image is None:
        present = ", ".join(f".{f}" for f in sorted(fields)) or "nothing"
        image = InputError(f"no image member (.{', .'.join(IMAGE_FIELDS)}); the key has {present}")
    text = fields.get(TEXT_FIELD, InputError("no caption (.txt member)"))
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")  # check_text names the first byte that is not UTF-8
    meta = {"url": _url(fields.get(META_FIELD)), "caption": _caption(text)}
    if tower == "visual":
        return Item(item_id, image, meta)
    if tower == "textual":
        return Item(item_id, text, meta)
    return Item(item_id, ImageText(image, text), meta)


def _url(member: object) -> str | None:
    """The ``url`` of a json member, or None where there is none (metadata never fails a sample)."""
    try:
        url = json.loads(member).get("url") if isinstance(member, bytes) else None
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        return None
    return url if isinstance(url, str) else None


def _caption(text: object) -> str | None:
    try:
        return text.encode("utf-8").decode("utf-8") if isinstance(text, str) else None
    except UnicodeEncodeError:
        return None


def _samples(shard: str, mode: str, load: Callable, name: str | None = None) -> Iterator[tuple[str | None, object]]:
    """(key, {field: load(tar, member, field)}) per sample, or (None, exception) once for a shard that fails.

    A sample is complete when the next member has another key or repeats a
    field, or when the archive ends; it is given before the next member's data
    is read, so damage there costs only what follows.  Damage at a header (a
    shard cut at a member boundary, a garbled header) ends the open sample,
    whose members were read whole; damage inside a member's data (a shard cut
    mid-file) drops it with the rest of the shard.  ``count_items``, which
    reads headers only, meets data damage at the next header as tarfile's
    "unexpected end of data", so both count the same samples.  A key seen
    before gives (key, InputError).
    """
    try:
        handle = _open(shard)
    except OSError as exc:
        yield None, exc
        return
    seen: set[str] = set()
    key, fields, done, member = None, {}, 0, None
    try:
        with handle, tarfile.open(fileobj=handle, mode=mode, tarinfo=_Header) as tar:
            for member in _members(tar):
                name_key, field = _split(member.name)
                if name_key != key or field in fields:
                    if key is not None:
                        done += 1
                        yield key, _unique(key, fields, seen)
                    key, fields = name_key, {}
                fields[field] = load(tar, member, field)
    except _DAMAGE as exc:
        if isinstance(exc, _Broken) and key is not None:  # at a header: the open sample's members are whole
            done += 1
            yield key, _unique(key, fields, seen)
        yield None, _damage(shard if name is None else name, exc, done, member)
        return
    if key is not None:
        yield key, _unique(key, fields, seen)


def _split(name: str) -> tuple[str, str]:
    """(key, field) of a member name, as webdataset's base_plus_ext with lower-cased suffixes."""
    match = _KEY.match(name)
    if match is None:
        raise InputError(f"member {name!r} has no key")  # _members keeps only names that match
    return match.group(1), match.group(2).lower()


def _unique(key: str, fields: dict, seen: set[str]) -> object:
    if key in seen:
        return InputError(f"duplicate key {key!r}: it appears again later in the shard; only its first sample counts")
    seen.add(key)
    return fields


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members that are samples' files: regular, with a dot in the name, not webdataset's ``__...__``."""
    while (member := tar.next()) is not None:
        tar.members.clear()  # tarfile keeps every header it read; a long shard would fill memory
        if member.isreg() and not _SKIPPED.match(member.name) and _KEY.match(member.name):
            yield member


def _open(shard: str) -> BinaryIO:
    try:
        return open_regular(shard)
    except NotRegularFileError as exc:
        if exc.kind == "a directory":
            raise IsADirectoryError(errno.EISDIR, f"{shard!r} is a directory, not a shard") from None
        raise
    except ValueError as exc:  # a NUL byte in the name
        raise OSError(f"cannot open shard {shard!r}: {exc}") from None


def _damage(shard: str, exc: BaseException, done: int, member: tarfile.TarInfo | None) -> InputError:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, _Broken):
        where = f"at byte {exc.offset}"
    elif member is not None:
        where = f"in member {member.name!r} (header at byte {member.offset})"
    else:
        return InputError(f"shard {shard!r} is not a tar file that can be read ({reason})")
    return InputError(
        f"shard {shard!r} is damaged {where}: {reason}; the {done} sample(s) before it are embedded, "
        "the rest of the shard cannot be read"
    )


class _Broken(tarfile.TarError):
    def __init__(self, reason: str, offset: int):
        super().__init__(reason)
        self.offset = offset


class _Header(tarfile.TarInfo):
    """A header whose failure is damage: tarfile would end the archive there without a word."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            raise  # a block of zeros: the archive's own end
        except tarfile.HeaderError as exc:
            if tar.offset == 0:
                raise  # tarfile's "not a tar" (and, in r:* mode, its try of the next compression)
            raise _Broken(f"{exc} where a header should be", tar.offset) from None
