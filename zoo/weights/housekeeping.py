"""Housekeeping of the weights cache: re-hash every blob, find and remove what killed
processes left, clear entries; and the checks that recognise a bad download body."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zoo._core.fs import is_stale_temp, read_json_record, remove_path, sha256_file
from zoo._core.names import HEX64

if TYPE_CHECKING:
    from zoo.weights.cache import CacheEntry, WeightsCache



@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-checking one blob."""

    sha256: str
    path: Path
    ok: bool
    actual: str | None  # what the bytes hash to (None when unreadable)
    #: Why bytes that hash to their name are still bad (empty, an HTML page, not a weights
    #: file), or None.
    problem: str | None = None


#: How much of a body :func:`body_problem` reads to recognise text.
_SNIFF = 512


def body_problem(path: Path) -> str | None:
    """Why the downloaded body at ``path`` is certainly not a weights file, or None: it is
    empty, an HTML page (a server's error or login page answered with 200), or a damaged ZIP
    (``torch.save``'s format, checked strictly from its central directory). Anything else is
    judged when it is loaded (:mod:`zoo.export.build`), which removes a cached download that fails.
    Reads the head of the file and the ZIP's directory only."""
    from zoo.export.containers import ContainerError, check_zip

    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not head:
        return "an empty body"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page, not a weights file (a server's error or login page?)"
    if head.startswith(b"PK\x03\x04"):
        try:
            check_zip(path, "the body")
        except ContainerError as exc:
            return f"a damaged ZIP, not a weights file ({str(exc).removeprefix('the body: ')})"
    return None


@dataclass(frozen=True)
class Leftover:
    """Something a killed process left in the cache."""

    path: Path
    kind: str
    size: int


def _listdir(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _leftover(path: Path, kind: str) -> Leftover:
    try:
        size = path.lstat().st_size
    except OSError:
        size = 0
    return Leftover(path, kind, size)


def verify(cache: WeightsCache, remove: bool = True) -> list[VerifyResult]:
    """Re-hash every blob; bad ones are deleted with their sidecars (unless not
    ``remove``); damaged records are repaired, orphan sidecars and stale index records
    removed."""
    results = []
    for sha in cache._blob_names():
        blob = cache.blob_path(sha)
        try:
            actual: str | None = sha256_file(blob)
        except OSError:
            actual = None
        problem = body_problem(blob) if actual == sha else None
        ok = actual == sha and problem is None
        if ok:
            cache.trusted(sha)  # refresh a stale or damaged sidecar
        elif remove:
            cache._remove(sha)
        results.append(VerifyResult(sha, blob, ok, actual, problem))
    for name in _listdir(cache.blobs):
        stem = name[:-5] if name.endswith(".json") else ""
        if HEX64.fullmatch(stem) and not cache.blob_path(stem).exists():
            remove_path(cache.blobs / name)  # orphan left by an interrupted add
    for name in _listdir(cache.index):
        if name.startswith("url-") and name.endswith(".json"):
            data, why = read_json_record(cache.index / name)
            if why is not None:
                cache._damaged(cache.index / name, why)
            elif data is not None and not cache.blob_path(str(data.get("sha256"))).is_file():
                remove_path(cache.index / name)
    return results

def leftovers(cache: WeightsCache) -> list[Leftover]:
    """What killed processes left: temp files of interrupted writes, unfinished
    downloads and their records whose lock is free, owner records of dead lock holders."""
    found: list[Leftover] = []
    for folder in (cache.blobs, cache.index, cache.locks):
        for name in _listdir(folder):
            path = folder / name
            if is_stale_temp(path):
                found.append(_leftover(path, "temp file of an interrupted write"))
    for name in _listdir(cache.blobs):
        path = cache.blobs / name
        if name.endswith(".part") and cache._lock_free(name[:-5]):
            found.append(_leftover(path, "unfinished download (a rerun resumes it)"))
        elif name.endswith(".part.json") and not path.with_name(name[:-5]).exists() and \
                cache._lock_free(name[:-10]):
            found.append(_leftover(path, "record of a removed download"))
    for name in _listdir(cache.locks):
        if name.endswith(".owner.json") and cache._lock_free(name[:-11]):
            found.append(_leftover(cache.locks / name, "owner record of an ended process"))
    return sorted(found, key=lambda x: str(x.path))

def remove_leftovers(cache: WeightsCache) -> list[Leftover]:
    """Delete :meth:`leftovers` (an unfinished download only while holding its lock)."""
    removed = []
    for item in leftovers(cache):
        name = item.path.name
        key = name[:-5] if name.endswith(".part") else None
        if key is None:
            if remove_path(item.path):
                removed.append(item)
            continue
        with cache._owned.try_hold(key, 0) as held:  # a download started meanwhile wins
            if not held:
                continue
            if remove_path(item.path):
                removed.append(item)
            remove_path(item.path.with_name(name + ".json"))
    return removed

def clear(cache: WeightsCache, name: str | None = None) -> list[CacheEntry]:
    """Remove every blob (``name`` None, also leftovers and the index), or those used by
    model ``name``, or whose hash starts with ``name`` (8+ hex digits)."""
    entries = cache.entries()
    if name is None:
        chosen = entries
    else:
        is_hash = len(name) >= 8 and all(c in "0123456789abcdef" for c in name.lower())
        chosen = [e for e in entries if any(m == name for m, _ in e.refs)
                  or (is_hash and e.sha256.startswith(name.lower()))]
    for entry in chosen:
        cache._remove(entry.sha256)
    if name is None:
        cache.remove_leftovers()
        for memo in _listdir(cache.index):
            if memo.endswith(".json"):
                remove_path(cache.index / memo)
    return chosen
