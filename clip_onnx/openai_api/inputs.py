"""What each string of a request's ``input`` is: a picture in a data URL, or a text. Refusals name the item.

One model serves both modalities: ``data:image/...;base64,...`` is an encoded
picture for the visual tower, every other string a text for the textual one.
Nothing here fetches or decodes: a URL is refused (no request leaves the
server), and the pictures are decoded by the Triton model that embeds them,
with its own limits (undecodable files, decompression bombs).
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from dataclasses import dataclass, field

from clip_onnx.errors import ApiError

# RFC 2397 with RFC 2045 tokens: "data: sales rose, profits fell" is a text, not a URL with a media type.
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
DATA_URL = re.compile(rf"data:(?P<type>{_TOKEN}/{_TOKEN})?(?P<params>(?:;{_TOKEN}(?:={_TOKEN})?)*),", re.IGNORECASE)
# A string that is nothing but a web address: a client that meant "fetch this picture".
WEB_URL = re.compile(r"https?://\S*", re.IGNORECASE)


@dataclass
class Inputs:
    """A request's items by modality, each with its index in ``input``: pictures as file bytes, texts as UTF-8."""

    count: int
    images: list[tuple[int, bytes]] = field(default_factory=list)
    texts: list[tuple[int, bytes]] = field(default_factory=list)


def parse_inputs(value: str | list, max_inputs: int) -> Inputs:
    """``input`` as the pictures and texts to embed, or ApiError 400 naming the first item at fault."""
    items = [value] if isinstance(value, str) else value
    if not items:
        raise ApiError(400, "input is an empty list; send at least one string", param="input", code="empty_input")
    if not all(isinstance(item, str) for item in items):
        raise ApiError(
            400,
            "input holds token ids; CLIP models tokenize with their own tokenizer, so send the texts as strings",
            param="input",
            code="token_ids_not_supported",
        )
    if len(items) > max_inputs:
        raise ApiError(
            400,
            f"input has {len(items)} items, more than the {max_inputs} one request may hold; send them in chunks "
            f"of at most {max_inputs}",
            param="input",
            code="too_many_inputs",
        )
    parsed = Inputs(len(items))
    for index, item in enumerate(items):
        if DATA_URL.match(item):
            parsed.images.append((index, _picture(item, index)))
        else:
            parsed.texts.append((index, _text(item, index)))
    return parsed


def _picture(item: str, index: int) -> bytes:
    where = f"input[{index}]"
    match = DATA_URL.match(item)
    assert match is not None
    media = (match["type"] or "").lower()
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if not media.startswith("image/"):
        raise ApiError(
            400,
            f"{where} is a data URL of {media or 'no media type'!r}; only pictures are embedded "
            "(data:image/png;base64,... or data:image/jpeg;base64,...)",
            param=where,
            code="unsupported_data_url",
        )
    if "base64" not in params:
        raise ApiError(
            400,
            f"{where} is a data URL without ';base64'; encode the picture as base64",
            param=where,
            code="not_base64",
        )
    try:
        data = b64decode(item[match.end() :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(
            400, f"{where}: the data URL is not valid base64 ({exc})", param=where, code="invalid_base64"
        ) from None
    if not data:
        raise ApiError(400, f"{where}: the data URL holds no bytes", param=where, code="invalid_image")
    return data


def _text(item: str, index: int) -> bytes:
    where = f"input[{index}]"
    if not item:
        raise ApiError(400, f"{where} is an empty string; send some text", param=where, code="empty_input")
    if WEB_URL.fullmatch(item):
        raise ApiError(
            400,
            f"{where} is a URL ({item:.80}); this server never fetches from the network: send the picture "
            "itself as a data URL (data:image/jpeg;base64,...)",
            param=where,
            code="url_not_supported",
        )
    try:
        return item.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            400,
            f"{where} is not valid Unicode ({exc.reason} at position {exc.start})",
            param=where,
            code="invalid_text",
        ) from None
