"""The weights store: content-addressed blobs under ``ZOO_HOME/weights``.

Layout::

    weights/
      sha256/<hex>          the bytes, named by their full sha256
      sha256/<hex>.json     sidecar: sha256, size, mtime_ns, urls, refs (model/weights), fetched_at
      sha256/<key>.part     an unfinished download (+ .part.json: URL, ETag) where <key> is the
                            expected hash/prefix or url-<hash of URL>; resumed by the next run
      index/url-<h>.json    {url, sha256}: an unpinned URL fetched before (no network next time)
      index/path-<h>.json   {path, size, mtime_ns, sha256}: a local file hashed before
      locks/<key>.lock      cross-process locks (filelock), one per download key

A hit costs a ``stat`` and a small JSON read: size and mtime must match the sidecar, or the
blob is hashed again (kept and re-recorded if it still matches its name, deleted if not).
Blobs and sidecars appear by atomic rename only, so the store never holds a file under a name
its bytes do not hash to. ``verify()`` re-hashes everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from zoo.fsutil import atomic_write_text, sha256_file
from zoo.paths import weights_dir

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _short(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@dataclass(frozen=True)
class CacheEntry:
    """One cached blob and what is known about it."""

    sha256: str
    path: Path
    size: int
    mtime_ns: int
    urls: tuple[str, ...] = ()
    refs: tuple[tuple[str, str | None], ...] = ()  # (model, weights name or None)
    fetched_at: str = ""

    def to_json(self) -> dict[str, Any]:
        """The sidecar / ``zoo cache list --json`` form."""
        return {
            "sha256": self.sha256, "path": str(self.path), "size": self.size,
            "mtime_ns": self.mtime_ns, "urls": list(self.urls),
            "refs": [{"model": m, "weights": w} for m, w in self.refs],
            "fetched_at": self.fetched_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> CacheEntry:
        refs = tuple((str(r.get("model")), r.get("weights")) for r in data.get("refs", []))
        return cls(str(data["sha256"]), path, int(data["size"]), int(data["mtime_ns"]),
                   tuple(data.get("urls", [])), refs, str(data.get("fetched_at", "")))


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-hashing one blob."""

    sha256: str
    path: Path
    ok: bool
    actual: str | None  # what the bytes hash to (None when unreadable)


class WeightsCache:
    """The content-addressed weights store (``root`` defaults to ``ZOO_HOME/weights``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or weights_dir()
        self.blobs = self.root / "sha256"

    # -- names ---------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this full hash lives."""
        return self.blobs / sha256

    def part_path(self, key: str) -> Path:
        """The resumable ``.part`` file for download ``key`` (created by the downloader)."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        return self.blobs / f"{key}.part"

    @staticmethod
    def url_key(url: str) -> str:
        """The download key of an unpinned URL."""
        return f"url-{_short(url)}"

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Any = None) -> Iterator[None]:
        """Hold the cross-process lock for ``key``; ``on_wait()`` is called if it is taken."""
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / "locks" / f"{key}.lock"))
        try:
            lock.acquire(timeout=0.2)
        except Timeout:
            if on_wait is not None:
                on_wait()
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    # -- lookups -------------------------------------------------------------------------

    def find(self, expected: str | None = None, *, url: str | None = None) -> CacheEntry | None:
        """A trusted entry for a full hash or 8-hex prefix, or for an indexed URL; else None."""
        if expected:
            expected = expected.lower()
            if HEX64.match(expected):
                candidates = [expected]
            else:
                try:
                    names = os.listdir(self.blobs)
                except FileNotFoundError:
                    return None
                candidates = sorted(n for n in names if n.startswith(expected) and HEX64.match(n))
        elif url:
            data = _read_json(self.root / "index" / f"{self.url_key(url)}.json")
            if not data or data.get("url") != url:
                return None
            candidates = [str(data.get("sha256"))]
        else:
            return None
        for sha in candidates:
            entry = self.trusted(sha)
            if entry is not None:
                return entry
        return None

    def trusted(self, sha256: str) -> CacheEntry | None:
        """The entry for ``sha256`` if its blob matches its sidecar (re-hashing only if not)."""
        blob = self.blob_path(sha256)
        try:
            st = blob.stat()
        except FileNotFoundError:
            return None
        data = _read_json(blob.with_name(f"{sha256}.json"))
        if data is not None and data.get("sha256") == sha256 and \
                data.get("size") == st.st_size and data.get("mtime_ns") == st.st_mtime_ns:
            return CacheEntry.from_json(data, blob)
        if sha256_file(blob) != sha256:  # touched or damaged: never serve it
            self._remove(sha256)
            return None
        data = {**(data or {}), "sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        data.setdefault("fetched_at", _now())
        write_json_atomic(blob.with_name(f"{sha256}.json"), data)
        return CacheEntry.from_json(data, blob)

    # -- writes --------------------------------------------------------------------------

    def add(self, part: Path, sha256: str, *, url: str | None = None,
            ref: tuple[str, str | None] | None = None) -> CacheEntry:
        """Move a verified file into the store (atomic rename) and record where it came from."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        st = part.stat()
        old = _read_json(self.blob_path(sha256).with_name(f"{sha256}.json")) or {}
        data = {
            "sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "urls": _merged(old.get("urls", []), url),
            "refs": _merged(old.get("refs", []), _ref(ref)),
            "fetched_at": _now(),
        }
        write_json_atomic(self.blob_path(sha256).with_name(f"{sha256}.json"), data)
        os.replace(part, self.blob_path(sha256))  # rename keeps mtime, so the sidecar holds
        if url is not None:
            self.index_url(url, sha256)
        return CacheEntry.from_json(data, self.blob_path(sha256))

    def note_use(self, entry: CacheEntry, *, url: str | None = None,
                 ref: tuple[str, str | None] | None = None) -> None:
        """Record another URL/model for a blob (only writes when something is new)."""
        new_url = url is not None and url not in entry.urls
        new_ref = ref is not None and ref not in entry.refs
        if not (new_url or new_ref):
            return
        sidecar = entry.path.with_name(f"{entry.sha256}.json")
        with self.lock(entry.sha256):
            data = _read_json(sidecar)
            if data is None:
                return
            data["urls"] = _merged(data.get("urls", []), url)
            data["refs"] = _merged(data.get("refs", []), _ref(ref))
            write_json_atomic(sidecar, data)

    def index_url(self, url: str, sha256: str) -> None:
        """Remember that ``url`` served ``sha256``."""
        write_json_atomic(self.root / "index" / f"{self.url_key(url)}.json",
                          {"url": url, "sha256": sha256})

    def hash_local(self, path: Path) -> str:
        """sha256 of a local file, memoised on (path, size, mtime) so a rerun skips the hash."""
        path = path.resolve()
        st = path.stat()
        memo = self.root / "index" / f"path-{_short(str(path))}.json"
        data = _read_json(memo)
        if data and data.get("path") == str(path) and data.get("size") == st.st_size and \
                data.get("mtime_ns") == st.st_mtime_ns and HEX64.match(str(data.get("sha256"))):
            return str(data["sha256"])
        sha = sha256_file(path)
        with contextlib.suppress(OSError):  # a read-only ZOO_HOME only costs a re-hash
            write_json_atomic(memo, {"path": str(path), "size": st.st_size,
                                     "mtime_ns": st.st_mtime_ns, "sha256": sha})
        return sha

    # -- maintenance ---------------------------------------------------------------------

    def _blob_names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.blobs) if HEX64.match(n))
        except FileNotFoundError:
            return []

    def entries(self) -> list[CacheEntry]:
        """Every blob with its sidecar facts (no hashing), sorted by hash."""
        entries = []
        for sha in self._blob_names():
            blob = self.blob_path(sha)
            data = _read_json(blob.with_name(f"{sha}.json"))
            if data is None:
                with contextlib.suppress(FileNotFoundError):
                    st = blob.stat()
                    entries.append(CacheEntry(sha, blob, st.st_size, st.st_mtime_ns))
                continue
            with contextlib.suppress(KeyError, TypeError, ValueError):
                entries.append(CacheEntry.from_json(data, blob))
        return entries

    def verify(self, remove: bool = True) -> list[VerifyResult]:
        """Re-hash every blob; bad ones are deleted with their sidecars (unless not ``remove``)."""
        results = []
        for sha in self._blob_names():
            blob = self.blob_path(sha)
            try:
                actual: str | None = sha256_file(blob)
            except OSError:
                actual = None
            ok = actual == sha
            if ok:
                self.trusted(sha)  # refresh a stale sidecar
            elif remove:
                self._remove(sha)
            results.append(VerifyResult(sha, blob, ok, actual))
        for sidecar in self.blobs.glob("*.json") if self.blobs.is_dir() else []:
            if HEX64.match(sidecar.stem) and not self.blob_path(sidecar.stem).exists():
                sidecar.unlink(missing_ok=True)  # orphan left by an interrupted add
        return results

    def clear(self, name: str | None = None) -> list[CacheEntry]:
        """Remove every blob (``name`` None, also partial downloads and the index), or those
        used by model ``name``, or whose hash starts with ``name`` (8+ hex digits)."""
        entries = self.entries()
        if name is None:
            chosen = entries
        else:
            is_hash = len(name) >= 8 and all(c in "0123456789abcdef" for c in name.lower())
            chosen = [e for e in entries if any(m == name for m, _ in e.refs)
                      or (is_hash and e.sha256.startswith(name.lower()))]
        for entry in chosen:
            self._remove(entry.sha256)
        if name is None:
            for stale in self.blobs.glob("*.part") if self.blobs.is_dir() else []:
                lock = FileLock(str(self.root / "locks" / f"{stale.stem}.lock"))
                try:
                    lock.acquire(timeout=0)  # a download in progress keeps its file
                except Timeout:
                    continue
                try:
                    stale.unlink(missing_ok=True)
                    stale.with_name(stale.name + ".json").unlink(missing_ok=True)
                finally:
                    lock.release()
            index = self.root / "index"
            for memo in index.glob("*.json") if index.is_dir() else []:
                memo.unlink(missing_ok=True)
        return chosen

    def _remove(self, sha256: str) -> None:
        self.blob_path(sha256).unlink(missing_ok=True)
        self.blob_path(sha256).with_name(f"{sha256}.json").unlink(missing_ok=True)
        index = self.root / "index"
        for memo in index.glob("url-*.json") if index.is_dir() else []:
            data = _read_json(memo)
            if data and data.get("sha256") == sha256:
                memo.unlink(missing_ok=True)

    list = entries  # ``cache.list()`` reads like the command it backs


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _ref(ref: tuple[str, str | None] | None) -> dict[str, Any] | None:
    return None if ref is None else {"model": ref[0], "weights": ref[1]}


def _merged(items: list[Any], new: Any) -> list[Any]:
    return items if new is None or new in items else [*items, new]
