"""The weights store: content-addressed blobs under ``ZOO_HOME/weights``.

Layout::

    weights/
      sha256/<hex>          the bytes, named by their full sha256
      sha256/<hex>.json     sidecar: sha256, size, mtime_ns, urls, refs (model/weights), fetched_at
      sha256/<key>.part     an unfinished download (+ .part.json: redacted URL, its hash, ETag)
                            where <key> is the expected hash/prefix or url-<hash of URL>
      index/url-<h>.json    {url (redacted), url_sha256, sha256}: an unpinned URL fetched before
      index/path-<h>.json   {path, size, mtime_ns, sha256}: a local file hashed before
      locks/<key>.lock      cross-process locks (filelock: flock, released when a process dies)
      locks/<key>.owner.json  who holds that lock: pid, host, start time, what

A hit costs a ``stat`` and a small JSON read: size and mtime must match the sidecar, or the
blob is hashed again (kept and re-recorded if it still matches its name, deleted if not).
Blobs and sidecars appear by atomic rename only, so the store never holds a file under a name
its bytes do not hash to. ``verify()`` re-hashes everything.

Self-healing: every record is read as hostile. One that is unreadable or malformed is
reported once (one ``zoo: warning:`` line), treated as a miss, and repaired (rebuilt from the
blob, or removed). A hit writes nothing, so a read-only ``ZOO_HOME`` serves hits. Records
never hold secrets: URLs are stored redacted and recognised by the hash of the full URL.
What killed processes leave (temp files, unfinished downloads whose lock is free, orphan
records) is listed by :meth:`WeightsCache.leftovers` and removed by ``clear()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo._core.fs import (
    atomic_write_text,
    read_json_record,
    remove_path,
    sha256_file,
    warn_once,
)
from zoo._core.locks import LockTimeout, OwnedLocks
from zoo._core.names import HEX64
from zoo.errors import DownloadError
from zoo.paths import weights_dir
from zoo.weights import housekeeping
from zoo.weights.housekeeping import (  # noqa: F401 (re-exported: their old home)
    Leftover,
    VerifyResult,
    _leftover,
    _listdir,
    body_problem,
)
from zoo.weights.urls import redact_url, url_digest


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` atomically (a folder in the way is removed first)."""
    if path.is_dir() and not path.is_symlink():
        remove_path(path)
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def _short(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _clean_sidecar(data: dict[str, Any], sha256: str) -> tuple[dict[str, Any], bool]:
    """The usable parts of a sidecar, and whether it was intact."""
    urls = data.get("urls", [])
    refs = data.get("refs", [])
    good_urls = [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []
    good_refs = [
        {"model": r["model"], "weights": r.get("weights")} for r in refs
        if isinstance(r, dict) and isinstance(r.get("model"), str)
        and isinstance(r.get("weights"), (str, type(None)))
    ] if isinstance(refs, list) else []
    fetched = data.get("fetched_at", "")
    clean = {"sha256": sha256, "urls": good_urls, "refs": good_refs,
             "fetched_at": fetched if isinstance(fetched, str) else ""}
    if _is_int(data.get("size")) and _is_int(data.get("mtime_ns")):
        clean.update(size=data["size"], mtime_ns=data["mtime_ns"])
    intact = (data.get("sha256") == sha256 and "size" in clean and isinstance(urls, list)
              and len(good_urls) == len(urls) and isinstance(refs, list)
              and len(good_refs) == len(refs) and isinstance(fetched, str))
    return clean, intact


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


def _memo_problem(data: dict[str, Any] | None) -> str | None:
    """Why a local file's hash memo cannot be used (None: it can, or there is none)."""
    if data is None or (isinstance(data.get("path"), str) and _is_int(data.get("size")) and
                        _is_int(data.get("mtime_ns")) and
                        HEX64.fullmatch(str(data.get("sha256", "")))):
        return None
    return "fields missing or of the wrong kind"


class WeightsCache:
    """The content-addressed weights store (``root`` defaults to ``ZOO_HOME/weights``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or weights_dir()
        self.blobs = self.root / "sha256"
        self.locks = self.root / "locks"
        self._owned = OwnedLocks(self.locks)
        self.index = self.root / "index"
        self.repaired: list[tuple[Path, str]] = []  # damaged records met by this instance

    # -- names ---------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this full hash lives."""
        return self.blobs / sha256

    def part_path(self, key: str) -> Path:
        """The resumable ``.part`` file for download ``key`` (created by the downloader)."""
        self._folder(self.blobs)
        return self.blobs / f"{key}.part"

    def _folder(self, path: Path) -> Path:
        """Make a folder of the store, replacing a file that stands where it belongs."""
        if path.exists() and not path.is_dir():
            self._damaged(path, "a file where a folder of the cache belongs")
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def url_key(url: str) -> str:
        """The download key of an unpinned URL (a hash of the full URL)."""
        return f"url-{_short(url)}"

    # -- damaged records -----------------------------------------------------------------

    def _damaged(self, path: Path, why: str, *, remove: bool = True) -> None:
        """Report a damaged record once, and remove it (a missing record heals itself)."""
        if (path, why) not in self.repaired:
            self.repaired.append((path, why))
        warn_once(str(path), f"damaged cache record {path} ({why}); treated as a miss and "
                  "repaired")
        if remove:
            remove_path(path)

    def _sidecar(self, sha256: str) -> tuple[dict[str, Any] | None, bool]:
        """(the sidecar's usable parts or None, whether it can be trusted as it is)."""
        path = self.blob_path(sha256).with_name(f"{sha256}.json")
        data, why = read_json_record(path)
        if data is None:
            if why is not None:
                self._damaged(path, why)
            return None, False
        clean, intact = _clean_sidecar(data, sha256)
        if not intact:
            self._damaged(path, "fields missing or of the wrong kind", remove=False)
        return clean, intact

    # -- locks ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Callable[[str], None] | None = None,
             timeout: float | None = None, what: str = "") -> Iterator[None]:
        """Hold the cross-process lock for ``key`` (:class:`zoo._core.locks.OwnedLocks`).

        If another process holds it, ``on_wait(holder)`` is called with a description of that
        process (pid, host, since when); after ``timeout`` seconds (None: no bound) waiting
        gives up with a DownloadError naming the holder. A holder that dies releases the
        lock with its last file descriptor (flock), so a dead process never blocks.
        """
        self._folder(self.locks)
        try:
            held = self._owned.acquire(key, timeout, on_wait, what)
        except LockTimeout as exc:
            raise DownloadError(
                f"gave up after {round(timeout or 0.0, 1):g} s waiting for the lock on "
                f"{what or key}: it is held by {exc.holder}; if that process is stuck, end it "
                "(its lock goes with it), or allow more time with --deadline "
                f"(lock file {exc.path})") from None
        try:
            yield
        finally:
            self._owned.release(key, held)

    def lock_holder(self, key: str) -> str:
        """Who holds the lock for ``key``, as its owner record tells (for messages)."""
        return self._owned.holder(key)

    def _lock_free(self, key: str) -> bool:
        """True when nobody holds the lock for ``key`` (False when that cannot be told)."""
        return self._owned.is_free(key)

    # -- lookups -------------------------------------------------------------------------

    def find(self, expected: str | None = None, *, url: str | None = None) -> CacheEntry | None:
        """A trusted entry for a full hash or 8-hex prefix, or for an indexed URL; else None."""
        if expected:
            expected = expected.lower()
            if HEX64.fullmatch(expected):
                candidates = [expected]
            elif re.fullmatch(r"[0-9a-f]{1,63}", expected):
                candidates = [n for n in self._blob_names() if n.startswith(expected)]
            else:
                return None
        elif url:
            sha = self._indexed(url)
            if sha is None:
                return None
            candidates = [sha]
        else:
            return None
        for sha in candidates:
            entry = self.trusted(sha)
            if entry is not None:
                return entry
        return None

    def _indexed(self, url: str) -> str | None:
        """The sha256 the URL index records for ``url``, or None."""
        path = self.index / f"{self.url_key(url)}.json"
        data, why = read_json_record(path)
        if data is not None and not (HEX64.fullmatch(str(data.get("sha256", ""))) and (
                isinstance(data.get("url_sha256"), str) or isinstance(data.get("url"), str))):
            data, why = None, "fields missing or of the wrong kind"
        if why is not None:
            self._damaged(path, why)
            return None
        if data is None:
            return None
        if "url_sha256" in data:
            return str(data["sha256"]) if data["url_sha256"] == url_digest(url) else None
        if data.get("url") != url:  # a record from before URLs were redacted
            return None
        with contextlib.suppress(OSError):
            self.index_url(url, str(data["sha256"]))  # rewrite it without the secrets
        return str(data["sha256"])

    def trusted(self, sha256: str) -> CacheEntry | None:
        """The entry for ``sha256`` if its blob matches its sidecar (re-hashing only if not)."""
        if not HEX64.fullmatch(sha256):
            return None
        blob = self.blob_path(sha256)
        try:
            st = blob.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            self._damaged(blob, "not a regular file")
            return None
        clean, intact = self._sidecar(sha256)
        if intact and clean is not None and clean["size"] == st.st_size and \
                clean["mtime_ns"] == st.st_mtime_ns:
            return CacheEntry.from_json(clean, blob)
        try:
            actual = sha256_file(blob)
        except OSError:
            return None
        if actual != sha256:  # touched or damaged: never serve it
            self._remove(sha256)
            return None
        data = {**(clean or {"urls": [], "refs": []}), "sha256": sha256, "size": st.st_size,
                "mtime_ns": st.st_mtime_ns}
        if not data.get("fetched_at"):
            data["fetched_at"] = _now()
        with contextlib.suppress(OSError):  # a read-only cache still serves the hit
            write_json_atomic(blob.with_name(f"{sha256}.json"), data)
        return CacheEntry.from_json(data, blob)

    # -- writes --------------------------------------------------------------------------

    def add(self, part: Path, sha256: str, *, url: str | None = None,
            ref: tuple[str, str | None] | None = None) -> CacheEntry:
        """Move a verified file into the store (atomic rename) and record where it came from
        (the URL redacted)."""
        self._folder(self.blobs)
        st = part.stat()
        old, _intact = self._sidecar(sha256)
        data = {
            "sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "urls": _merged((old or {}).get("urls", []), None if url is None else redact_url(url)),
            "refs": _merged((old or {}).get("refs", []), _ref(ref)),
            "fetched_at": _now(),
        }
        write_json_atomic(self.blob_path(sha256).with_name(f"{sha256}.json"), data)
        if self.blob_path(sha256).is_dir():
            remove_path(self.blob_path(sha256))
        os.replace(part, self.blob_path(sha256))  # rename keeps mtime, so the sidecar holds
        if url is not None:
            self.index_url(url, sha256)
        return CacheEntry.from_json(data, self.blob_path(sha256))

    def note_use(self, entry: CacheEntry, *, url: str | None = None,
                 ref: tuple[str, str | None] | None = None) -> None:
        """Record another URL/model for a blob (only writes when something is new; best
        effort: a read-only or busy cache just skips it)."""
        shown = None if url is None else redact_url(url)
        new_url = shown is not None and shown not in entry.urls
        new_ref = ref is not None and ref not in entry.refs
        if not (new_url or new_ref):
            return
        sidecar = entry.path.with_name(f"{entry.sha256}.json")
        with contextlib.suppress(OSError, DownloadError), self.lock(entry.sha256, timeout=5.0):
            clean, intact = self._sidecar(entry.sha256)
            if clean is None or not intact:
                return
            clean["urls"] = _merged(clean["urls"], shown)
            clean["refs"] = _merged(clean["refs"], _ref(ref))
            write_json_atomic(sidecar, clean)

    def index_url(self, url: str, sha256: str) -> None:
        """Remember that ``url`` served ``sha256`` (keyed and matched by the full URL's hash,
        stored redacted)."""
        self._folder(self.index)
        write_json_atomic(self.index / f"{self.url_key(url)}.json",
                          {"url": redact_url(url), "url_sha256": url_digest(url),
                           "sha256": sha256})

    def hash_local(self, path: Path) -> str:
        """sha256 of a local file, memoised on (path, size, mtime) so a rerun skips the hash."""
        path = path.resolve()
        st = path.stat()
        memo = self.index / f"path-{_short(str(path))}.json"
        data, why = read_json_record(memo)
        why = why or _memo_problem(data)
        if why is not None:
            self._damaged(memo, why)
        elif data and data.get("path") == str(path) and data.get("size") == st.st_size and \
                data.get("mtime_ns") == st.st_mtime_ns:
            return str(data["sha256"])
        sha = sha256_file(path)
        with contextlib.suppress(OSError):  # a read-only ZOO_HOME only costs a re-hash
            self._folder(self.index)
            write_json_atomic(memo, {"path": str(path), "size": st.st_size,
                                     "mtime_ns": st.st_mtime_ns, "sha256": sha})
        return sha

    # -- maintenance ---------------------------------------------------------------------

    def _blob_names(self) -> list[str]:
        return sorted(n for n in _listdir(self.blobs) if HEX64.fullmatch(n))

    def entries(self) -> list[CacheEntry]:
        """Every blob with its sidecar facts, sorted by hash; only a blob whose sidecar is
        missing or damaged is hashed (and kept, with a rebuilt sidecar, if it is intact)."""
        entries = []
        for sha in self._blob_names():
            blob = self.blob_path(sha)
            try:
                st = blob.stat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            clean, intact = self._sidecar(sha)
            if clean is not None and intact:
                entries.append(CacheEntry.from_json(clean, blob))
                continue
            entry = self.trusted(sha)  # missing or damaged record: re-hash, rebuild it
            if entry is not None:
                entries.append(entry)
        return entries

    def verify(self, remove: bool = True) -> list[VerifyResult]:
        """Re-hash every blob (see :func:`zoo.weights.housekeeping.verify`)."""
        return housekeeping.verify(self, remove)

    def leftovers(self) -> list[Leftover]:
        """What killed processes left (see :func:`zoo.weights.housekeeping.leftovers`)."""
        return housekeeping.leftovers(self)

    def remove_leftovers(self) -> list[Leftover]:
        """Delete :meth:`leftovers` (an unfinished download only while holding its lock)."""
        return housekeeping.remove_leftovers(self)

    def clear(self, name: str | None = None) -> list[CacheEntry]:
        """Remove every blob, or a model's, or by hash prefix (see the housekeeping module)."""
        return housekeeping.clear(self, name)

    def reject(self, sha256: str) -> bool:
        """Remove a blob whose bytes failed a check after download (they hash to their name
        but are not usable weights), with its sidecar and every URL index record naming it,
        so the next resolution downloads again; whether there was one to remove."""
        if not HEX64.fullmatch(sha256) or not self.blob_path(sha256).exists():
            return False
        self._remove(sha256)
        return True

    def _remove(self, sha256: str) -> None:
        remove_path(self.blob_path(sha256))
        remove_path(self.blob_path(sha256).with_name(f"{sha256}.json"))
        for name in _listdir(self.index):
            if name.startswith("url-") and name.endswith(".json"):
                data, why = read_json_record(self.index / name)
                if why is not None:
                    self._damaged(self.index / name, why)
                elif data is not None and data.get("sha256") == sha256:
                    remove_path(self.index / name)

    list = entries  # ``cache.list()`` reads like the command it backs


def reject_cached(path: Path, sha256: str) -> bool:
    """Remove ``path`` from its weights cache when it is a cached blob (``.../sha256/<hex>``
    named by ``sha256``) that failed a check after download; False for any other file (a
    user's local weights are never touched)."""
    if path.name != sha256 or path.parent.name != "sha256" or not HEX64.fullmatch(sha256):
        return False
    return WeightsCache(path.parent.parent).reject(sha256)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _ref(ref: tuple[str, str | None] | None) -> dict[str, Any] | None:
    return None if ref is None else {"model": ref[0], "weights": ref[1]}


def _merged(items: list[Any], new: Any) -> list[Any]:
    return items if new is None or new in items else [*items, new]
