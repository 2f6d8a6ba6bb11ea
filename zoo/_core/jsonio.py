"""The one reader of small JSON documents from outside (records, tombstones, manifests, bench
files, cache records): bounded in size, UTF-8, no duplicate keys (two parsers must never read
two meanings), no NaN or Infinity, the top level an object. Failures are one-line
:class:`ValueError` reasons the caller puts after the thing's name."""

from __future__ import annotations

import json
from typing import Any


class JSONRefused(ValueError):
    """Why the bytes are not an acceptable JSON object (one line)."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JSONRefused(f"duplicate key {key[:60]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not a number zoo accepts (numbers must be finite)")


def json_object(blob: bytes | str, limit: int, what: str = "document") -> dict[str, Any]:
    """Parse ``blob`` (at most ``limit`` bytes) as one JSON object; :class:`JSONRefused`
    naming the first problem (size, encoding, syntax, duplicate key, NaN, not an object)."""
    if len(blob) > limit:
        raise JSONRefused(f"{len(blob)} bytes is larger than any {what}")
    try:
        text = blob.decode("utf-8") if isinstance(blob, bytes) else blob
    except UnicodeDecodeError:
        raise JSONRefused("not UTF-8") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except JSONRefused:
        raise
    except (ValueError, RecursionError) as exc:
        raise JSONRefused(f"not valid JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(data, dict):
        raise JSONRefused("not a JSON object")
    return data
