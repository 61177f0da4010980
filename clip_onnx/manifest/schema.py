"""Field checks for reading a manifest someone else may have written: each raises BundleError naming the field.

Also ``freeze``/``thaw``, which turn the free-form JSON parts of a manifest
(parity reports, export versions) into read-only values and back, so a
``Manifest`` stays immutable all the way down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from clip_onnx.errors import BundleError

Check = tuple[Callable[[Any], Any], str]  # (is the value valid?, what it must be, in words)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def freeze(value: Any) -> Any:
    """Parsed JSON made read-only: objects become mappingproxies, arrays tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def frozen(obj: Any, *names: str) -> None:
    """In a frozen dataclass's ``__post_init__``: make the named fields read-only (``freeze``) in place."""
    for name in names:
        object.__setattr__(obj, name, freeze(getattr(obj, name)))


def thaw(value: Any) -> Any:
    """``freeze`` undone: plain dicts and lists, ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


class Schema:
    """Checks of one manifest's fields; ``where`` (the manifest's path) starts every message."""

    def __init__(self, where: str):
        self.where = where

    def error(self, message: str) -> BundleError:
        return BundleError(f"{self.where}: {message}")

    def document(self, data: Any, format_name: str, version: int) -> None:
        """Refuse anything but a JSON object of this format and version."""
        if not isinstance(data, dict):
            kind = {list: "array", str: "string", bool: "boolean"}.get(type(data), type(data).__name__)
            raise self.error(f"a manifest is a JSON object, got a JSON {kind}")
        if data.get("format") != format_name:
            raise self.error(f"format is {data.get('format')!r:.80}, expected {format_name!r}")
        if data.get("format_version") != version:
            raise self.error(
                f"bundle format version {data.get('format_version')!r:.80} is not supported by this clip-onnx "
                f"(reads version {version}); re-export or upgrade clip-onnx"
            )

    def fields(self, obj: Mapping, prefix: str, table: Mapping[str, Check], *, required: bool = True) -> None:
        """Check ``obj[key]`` with each (valid, expected) of ``table``; absent keys only when ``required``."""
        for key, (valid, expected) in table.items():
            if key not in obj:
                if required:
                    raise self.error(f"field '{prefix + key}' is missing; it must be {expected}")
            elif not valid(obj[key]):
                text = repr(obj[key])
                raise self.error(
                    f"field '{prefix + key}' must be {expected}, got "
                    f"{type(obj[key]).__name__} {text if len(text) <= 80 else text[:77] + '...'}"
                )

    def one(self, obj: Mapping, key: str, name: str, valid: Callable[[Any], Any], expected: str) -> Any:
        """``obj[key]``, checked under the dotted ``name``."""
        self.fields({name: obj[key]} if key in obj else {}, "", {name: (valid, expected)})
        return obj[key]

    def mapping(self, obj: Mapping, key: str, name: str | None = None) -> dict:
        return self.one(obj, key, name or key, lambda v: isinstance(v, dict), "a JSON object")

    def strings(self, obj: Mapping, key: str, name: str) -> tuple[str, ...]:
        valid = lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v)  # noqa: E731
        return tuple(self.one(obj, key, name, valid, "a list of strings"))

    def listed(self, obj: Mapping, key: str, name: str, files: Mapping) -> str:
        """``obj[key]``: a file name that ``files`` lists (every file the runtime opens is hashed)."""
        return self.listed_name(
            self.one(obj, key, name, lambda v: isinstance(v, str) and v, "a file name"), name, files
        )

    def listed_name(self, value: str, name: str, files: Mapping) -> str:
        if value not in files:
            raise self.error(
                f"field '{name}' names {value!r:.80}, which 'files' does not list; "
                "every file the runtime opens must be listed with its sha256"
            )
        return value


def check_file_name(name: str, where: str) -> None:
    """Refuse a listed name that is absolute, empty, or steps out of the bundle."""
    if not name or "\0" in name or name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        raise BundleError(
            f"{where}: manifest names a file outside the bundle or not a plain relative path: {name!r:.120}"
        )
