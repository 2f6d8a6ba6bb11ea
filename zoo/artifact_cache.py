"""The export cache under ``ZOO_HOME/artifacts``: the one home of lookup, lock, commit, install,
list, clear, prune and repair. Imports no torch; a hit costs a small JSON read and a ``stat``
per file.

Layout::

    artifacts/
      <key>/                   one entry: the artifact (a file or a folder), manifest, ...
      records/<key>.json       written by commit, last: every file's size and sha256 (and a
                               stat fingerprint), model, format, manifest file, created, last_used
      locks/<key>.lock         cross-process lock (flock: a holder that dies releases it)
      locks/<key>.owner.json   who holds it: pid, host, since when
      locks/staging-<id>.lock  held while ``.staging-<id>`` is in use
      .staging-<id>/           an export in progress
      .trash-<key>-<id>/       an entry being removed

Trust: a hit is served only when every file of the entry (no more, no fewer) still hashes to
what its record says. The record lives outside the entry, so editing an entry's bytes (or an
output, which is always a copy: reflink where the file system can, never a hard link) never
makes them trusted. The fingerprint (inode, mtime, ctime; ctime cannot be set back) lets an
unchanged file pass with a ``stat``; any difference costs a full re-hash.

Self-healing: a record that is unreadable, malformed or contradicted by the bytes is reported
once (a warning), treated as a miss, and its entry evicted. A read-only root serves hits
(no locks, nothing written) and exports a miss through a private temporary folder. What
killed processes leave is listed by :meth:`ArtifactCache.leftovers` and removed by ``clear()``.
The size budget (``ZOO_CACHE_MAX``) is applied after every commit, least recently used first.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from filelock import FileLock, Timeout

from zoo.errors import ExportError, UsageError
from zoo.fsutil import atomic_write_text, process_alive, read_json_record, sha256_file

BUDGET_ENV = "ZOO_CACHE_MAX"
RECORD_VERSION = 1
RECORD_MAX = 4 << 20  # bytes: a bigger record is damaged, not read
LOCK_POLL = 0.2  # seconds before a waiter says whom it waits for
LOCK_TIMEOUT = 1800.0  # seconds a waiter waits for another process's export of the same key
BUSY_TIMEOUT = 10.0  # seconds clear/evict wait for an entry in use
STALE_TEMP_AGE = 60.0  # seconds: a temp file untouched this long belongs to no live writer
FICLONE = 0x40049409  # Linux ioctl: share the source's extents (btrfs, xfs, ...)
RENAME_EXCHANGE = 2  # Linux renameat2 flag: swap two names atomically
SIDECAR_SUFFIX = ".manifest.json"  # zoo.manifest.SIDECAR_SUFFIX (not imported: pydantic)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

Warn = Callable[[str], None]
UNKNOWN_PROVENANCE: dict[str, Any] = {"kind": "unknown"}


def read_provenance(value: Any) -> dict[str, Any]:
    """A record's provenance, checked field by field; anything malformed (or a record written
    before provenance existed) is ``{"kind": "unknown"}``, which no trust rule accepts.

    ``built``: this machine exported the bytes (``weights_from``: how the weights arrived).
    ``pulled``: installed from team store ``store``, record ``record`` (its sha256), signed by
    ``signer`` (a key fingerprint) or unsigned (None).
    """
    if not isinstance(value, dict):
        return dict(UNKNOWN_PROVENANCE)
    kind = value.get("kind")
    if kind == "built":
        source = value.get("weights_from")
        return {"kind": "built",
                "weights_from": source if _label(source, 1000) else "unknown"}
    if kind == "pulled":
        store, record, signer = value.get("store"), value.get("record"), value.get("signer")
        if _label(store, 1000) and isinstance(record, str) and _HEX64.match(record) and \
                (signer is None or (isinstance(signer, str) and _HEX64.match(signer))):
            return {"kind": "pulled", "store": store, "record": record, "signer": signer}
    return dict(UNKNOWN_PROVENANCE)


@dataclass(frozen=True)
class CachedExport:
    """One committed entry. ``files`` maps each file's path inside ``folder`` (posix, a folder
    artifact's files as ``x.mlpackage/Data/...``) to its recorded sha256."""

    key: str
    folder: Path
    model: str
    format: str
    files: dict[str, str]
    manifest_file: str
    size: int
    last_used: float
    created: float = 0.0
    artifact_file: str = ""
    #: Where the bytes came from (see :func:`read_provenance`): ``{"kind": "built", ...}``,
    #: ``{"kind": "pulled", "store", "record", "signer"}`` or ``{"kind": "unknown"}``.
    provenance: dict[str, Any] = field(default_factory=lambda: dict(UNKNOWN_PROVENANCE))

    @property
    def names(self) -> list[str]:
        """The entry's top-level names (files and folders), sorted."""
        return sorted({rel.split("/", 1)[0] for rel in self.files})


@dataclass(frozen=True)
class Leftover:
    """Something a killed process left behind: where, what it is, how many bytes."""

    path: Path
    kind: str
    size: int


@dataclass(frozen=True)
class _Record:
    entry: CachedExport
    sizes: dict[str, int]
    stats: dict[str, list[int]]  # rel -> [inode, mtime_ns, ctime_ns]
    raw: dict[str, Any] = field(default_factory=dict)


# -- sizes and the budget ------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``"20G"`` -> bytes, in zoo's one size grammar (:func:`zoo._core.settings.parse_size`:
    K/M/G/T and KiB... are powers of 1024, KB/MB/GB/TB powers of 1000)."""
    from zoo._core.settings import parse_size as parse

    return parse(text)


def cache_budget() -> int | None:
    """The artifact cache's size budget from ``ZOO_CACHE_MAX`` (None when unset or empty)."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return None
    try:
        return parse_size(text)
    except ValueError:
        from zoo._core.settings import SIZE_HELP

        raise UsageError(
            f"{BUDGET_ENV}={text[:40]!r} is not a size; use {SIZE_HELP} (e.g. "
            f"{BUDGET_ENV}=20G), or unset it for no limit"
        ) from None


def _human(n: int) -> str:
    from zoo._core.settings import format_size

    return format_size(n)


# -- small file helpers --------------------------------------------------------------------


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()
DIR_MODE = FILE_MODE | ((FILE_MODE & 0o444) >> 2)  # rw-r--r-- -> rwxr-xr-x


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _HEX64.match(key):
        raise ValueError(f"not an export cache key (64 hex digits): {key!r}")


def _safe_rel(rel: Any) -> bool:
    """A relative posix path that stays inside its folder."""
    if not isinstance(rel, str) or not rel or len(rel) > 1024 or "\\" in rel or \
            not rel.isprintable():
        return False
    parts = PurePosixPath(rel).parts
    return not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts) and \
        "/".join(parts) == rel


def _bare(name: str) -> bool:
    return _safe_rel(name) and "/" not in name


def _label(value: Any, limit: int = 200) -> bool:
    """A short printable text (model and format names in records)."""
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _remove(path: Path) -> bool:
    """Delete a file, link or folder (best effort); True when it is gone."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def _listdir(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _size_of(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())
        return path.lstat().st_size
    except OSError:
        return 0


def _is_stale_temp(path: Path) -> bool:
    name = path.name
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    try:
        return time.time() - path.lstat().st_mtime >= STALE_TEMP_AGE
    except OSError:
        return False


def _fingerprint(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _tree(folder: Path) -> tuple[dict[str, os.stat_result], str | None]:
    """Every regular file under ``folder`` by relative posix path, with its ``lstat``; or a
    problem (missing folder, a link, a device, unreadable)."""
    found: dict[str, os.stat_result] = {}
    try:
        top = folder.lstat()
    except FileNotFoundError:
        return {}, "the entry folder is missing"
    except OSError as exc:
        return {}, f"unreadable: {exc.strerror or exc}"
    if not stat.S_ISDIR(top.st_mode):
        return {}, "the entry is not a folder"
    stack = [(folder, "")]
    while stack:
        here, prefix = stack.pop()
        try:
            with os.scandir(here) as it:
                items = list(it)
        except OSError as exc:
            return {}, f"unreadable: {exc.strerror or exc}"
        for item in items:
            rel = f"{prefix}{item.name}"
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as exc:
                return {}, f"{rel!r} unreadable: {exc.strerror or exc}"
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(item.path), f"{rel}/"))
            elif stat.S_ISREG(st.st_mode):
                found[rel] = st
            else:
                return {}, f"{rel!r} is not a regular file (a link or a device)"
    return found, None


def _clone(src: Path, dest: Path) -> None:
    """Copy ``src``'s bytes into the existing file ``dest``: a reflink where the file system
    shares extents (FICLONE), else an in-kernel copy (copy_file_range), else a plain copy.
    Never a hard link: ``dest`` is a new inode."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        if sys.platform.startswith("linux"):
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
                return
            size = os.fstat(fin.fileno()).st_size
            try:
                copied = 0
                while copied < size:
                    n = os.copy_file_range(fin.fileno(), fout.fileno(), size - copied)
                    if n == 0:
                        break
                    copied += n
                if copied == size:
                    return
            except OSError:
                pass
            fin.seek(0)
            fout.seek(0)
            fout.truncate()
        shutil.copyfileobj(fin, fout, 1 << 20)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), RENAME_EXCHANGE)
    return rc == 0


def _disk_error(exc: OSError, where: Path, what: str) -> ExportError:
    reason = exc.strerror or type(exc).__name__
    hint = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else \
        "check the folder's permissions"
    return ExportError(f"cannot {what} in the export cache at {where}: {reason}; {hint}, or set "
                       "ZOO_HOME to another folder")


def _warn_stderr(message: str) -> None:
    """A warning on zoo's channel (:mod:`zoo._core.log`), once per process."""
    from zoo._core.log import warn

    warn(message)


# -- the cache -----------------------------------------------------------------------------


class ArtifactCache:
    """The export cache (``root`` defaults to ``ZOO_HOME/artifacts``).

    ``warn`` receives each damage report (once per problem); by default a ``zoo: warning:``
    line on stderr. ``budget`` (bytes) defaults to ``ZOO_CACHE_MAX``; a bad value raises
    :class:`UsageError` here, before any export work.
    """

    def __init__(self, root: Path | None = None, *, warn: Warn | None = None,
                 budget: int | Literal["env"] | None = "env") -> None:
        if root is None:
            from zoo.paths import artifacts_dir

            root = artifacts_dir()
        self.root = Path(root)
        self.records = self.root / "records"
        self.locks = self.root / "locks"
        self.budget = cache_budget() if budget == "env" else budget
        self._warn = warn or _warn_stderr
        self._reported: set[tuple[str, str]] = set()
        self._writable: bool | None = None
        self._private: Path | None = None
        #: (key, problem) of every damaged entry or record this instance met.
        self.repaired: builtins.list[tuple[str, str]] = []

    # -- names ---------------------------------------------------------------------------

    @staticmethod
    def key(identity: dict[str, Any]) -> str:
        """The 64-hex sha256 of ``identity``'s canonical JSON (sorted keys, no spaces)."""
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def folder(self, key: str) -> Path:
        """Where the entry for ``key`` lives (whether or not it exists)."""
        return self.root / key

    def record_path(self, key: str) -> Path:
        """Where the record for ``key`` lives."""
        return self.records / f"{key}.json"

    @property
    def writable(self) -> bool:
        """Whether this process can write under ``root`` (probed once by creating a file)."""
        if self._writable is None:
            from zoo.paths import home_problem

            if home_problem() is not None and self.root.parent == _home():
                self._writable = False
                return False
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=self.root)
                os.close(fd)
                os.unlink(probe)
                self._writable = True
            except OSError:
                self._writable = False
        return self._writable

    @property
    def trusted(self) -> bool:
        """False when the cache lies under a ``ZOO_HOME`` other users can write to: nothing
        in it is served (:func:`zoo.paths.home_problem` warns once)."""
        from zoo.paths import home_problem

        return self.root.parent != _home() or home_problem() is None

    # -- locks ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Warn | None = None,
             timeout: float | None = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold the cross-process lock for ``key`` (re-entrant within a process).

        If another process holds it, ``on_wait`` gets one message naming that process; after
        ``timeout`` seconds (None: no bound) waiting gives up with an :class:`ExportError`
        naming the holder. On a read-only root there is no lock (only reads happen there).
        """
        _check_key(key)
        if not self.writable:
            yield
            return
        held = self._acquire(key, timeout, on_wait)
        if held is None:
            raise ExportError(
                f"gave up after {timeout:g} s waiting for the export cache lock on {key[:16]}: "
                f"it is held by {self.lock_holder(key)}; if that process is stuck, end it (its "
                f"lock goes with it) (lock file {self.locks / f'{key}.lock'})")
        try:
            yield
        finally:
            self._release(key, held)

    def lock_holder(self, key: str) -> str:
        """Who holds the lock for ``key``, as its owner record tells (for messages)."""
        data, _why = read_json_record(self.locks / f"{key}.owner.json", 4096)
        if data is None or not _is_int(data.get("pid")) or not isinstance(data.get("host"), str) \
                or not _is_num(data.get("started")):
            return "another process (it left no owner record)"
        pid, host, started = data["pid"], data["host"][:100], float(data["started"])
        since = time.strftime("%H:%M:%S", time.localtime(started))
        text = f"pid {pid} on {host!r} (since {since}, {max(0.0, time.time() - started):.0f} s ago)"
        if host == socket.gethostname() and not process_alive(pid):
            text += " (no longer running)"
        return text

    def _acquire(self, key: str, timeout: float | None, on_wait: Warn | None = None,
                 ) -> FileLock | None:
        self.locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.locks / f"{key}.lock"), is_singleton=True)
        first = LOCK_POLL if timeout is None else min(LOCK_POLL, timeout)
        try:
            lock.acquire(timeout=first)
        except Timeout:
            if on_wait is not None:
                on_wait(f"waiting for {self.lock_holder(key)}, which holds the export cache "
                        f"lock on {key[:16]}")
            rest = -1.0 if timeout is None else max(0.0, timeout - first)
            try:
                lock.acquire(timeout=rest)
            except Timeout:
                return None
        if lock.lock_counter == 1:
            with contextlib.suppress(OSError):
                atomic_write_text(self.locks / f"{key}.owner.json", json.dumps(
                    {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
        return lock

    def _release(self, key: str, lock: FileLock) -> None:
        if lock.lock_counter == 1:
            with contextlib.suppress(OSError):
                (self.locks / f"{key}.owner.json").unlink(missing_ok=True)
        lock.release()

    @contextlib.contextmanager
    def _try_hold(self, key: str, timeout: float) -> Iterator[bool]:
        """Hold ``key``'s lock if it can be had within ``timeout``; yields whether it is held."""
        try:
            held = self._acquire(key, timeout) if self.writable else None
        except OSError:
            held = None
        try:
            yield held is not None
        finally:
            if held is not None:
                self._release(key, held)

    def _lock_free(self, name: str) -> bool:
        """True when nobody holds ``locks/NAME.lock`` (False when that cannot be told)."""
        path = self.locks / f"{name}.lock"
        if not path.exists():
            return True
        lock = FileLock(str(path), is_singleton=True)
        if lock.is_locked:  # held by this process
            return False
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            return False
        lock.release()
        return True

    # -- records -------------------------------------------------------------------------

    def _read_record(self, key: str) -> tuple[_Record | None, str | None]:
        """(record, None); (None, None) when there is none; (None, why) when it is damaged."""
        path = self.record_path(key)
        data, why = read_json_record(path)
        if data is None:
            return None, why
        files = data.get("files")
        if data.get("version") != RECORD_VERSION or data.get("key") != key or \
                not isinstance(files, dict) or not files:
            return None, "fields missing or of the wrong kind"
        sums, sizes, stats = {}, {}, {}
        for rel, meta in files.items():
            if not _safe_rel(rel) or not isinstance(meta, dict) or \
                    not _is_int(meta.get("size")) or \
                    not isinstance(meta.get("sha256"), str) or not _HEX64.match(meta["sha256"]):
                return None, f"a bad file entry {str(rel)[:80]!r}"
            fp = meta.get("stat")
            sums[rel], sizes[rel] = meta["sha256"], meta["size"]
            stats[rel] = fp if isinstance(fp, list) and len(fp) == 3 and all(
                _is_int(v) for v in fp) else []
        names = {rel.split("/", 1)[0] for rel in files}
        for rel in files:  # a path is either a file or a folder, never both
            parts = rel.split("/")
            if any("/".join(parts[:i]) in files for i in range(1, len(parts))):
                return None, "a file entry and a folder entry of the same name"
        manifest, artifact = data.get("manifest_file"), data.get("artifact", "")
        model, fmt = data.get("model"), data.get("format")
        if not isinstance(manifest, str) or manifest not in files or "/" in manifest or \
                not isinstance(artifact, str) or (artifact and artifact not in names) or \
                not _label(model) or not _label(fmt) or \
                not _is_num(data.get("created")) or not _is_num(data.get("last_used")):
            return None, "fields missing or of the wrong kind"
        try:
            touched = path.stat().st_mtime
        except OSError:
            touched = 0.0
        entry = CachedExport(
            key=key, folder=self.folder(key), model=str(model), format=str(fmt), files=sums,
            manifest_file=manifest, size=sum(sizes.values()),
            last_used=touched or float(data["last_used"]), created=float(data["created"]),
            artifact_file=artifact, provenance=read_provenance(data.get("provenance")))
        return _Record(entry, sizes, stats, data), None

    def _check(self, record: _Record, full: bool) -> tuple[str | None, bool]:
        """(problem or None, whether a fingerprint changed while the bytes still match)."""
        found, why = _tree(record.entry.folder)
        if why is not None:
            return why, False
        expected = set(record.sizes)
        if set(found) != expected:
            missing, extra = sorted(expected - set(found)), sorted(set(found) - expected)
            what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
            return f"files {what}", False
        changed = []
        for rel, st in found.items():
            if st.st_size != record.sizes[rel]:
                return f"{rel} is {st.st_size} bytes, {record.sizes[rel]} were recorded", False
            if full or _fingerprint(st) != record.stats[rel]:
                changed.append(rel)
        for rel in changed:
            try:
                actual = sha256_file(record.entry.folder / rel)
            except OSError as exc:
                return f"{rel} unreadable: {exc.strerror or exc}", False
            if actual != record.entry.files[rel]:
                return f"{rel} no longer hashes to the sha256 recorded at commit", False
        return None, any(_fingerprint(found[rel]) != record.stats[rel] for rel in changed)

    def _refresh(self, record: _Record) -> None:
        """Re-record the fingerprints of files that were re-hashed and still match."""
        key = record.entry.key
        with self._try_hold(key, 0) as held:
            if not held:
                return
            found, why = _tree(record.entry.folder)
            if why is not None:
                return
            data = dict(record.raw)
            data["files"] = {rel: {"size": record.sizes[rel], "sha256": record.entry.files[rel],
                                   "stat": _fingerprint(found[rel])} for rel in record.sizes}
            with contextlib.suppress(OSError):
                atomic_write_text(self.record_path(key), json.dumps(data, indent=1,
                                                                    sort_keys=True))

    def _damaged(self, key: str, why: str) -> None:
        """Report a damaged entry once, and evict it (when writable and still damaged)."""
        removed = False
        if self.writable:
            with self._try_hold(key, BUSY_TIMEOUT) as held:
                if held:
                    record, now = self._read_record(key)
                    still = now is not None or record is None or \
                        self._check(record, full=True)[0] is not None
                    if still:
                        removed = self._remove_entry(key)
        if (key, why) not in self._reported:
            self._reported.add((key, why))
            self.repaired.append((key, why))
            self._warn(f"damaged export cache entry {self.folder(key)} ({why}); treated as a "
                       f"miss{' and removed' if removed else ''}")

    def _remove_entry(self, key: str) -> bool:
        """Remove the record (first: nothing half-removed is trusted), then the folder."""
        if not _remove(self.record_path(key)):
            return False
        folder = self.folder(key)
        if not os.path.lexists(folder):
            return True
        trash = self.root / f".trash-{key}-{secrets.token_hex(4)}"
        try:
            os.rename(folder, trash)
        except OSError:
            return _remove(folder)
        return _remove(trash)

    # -- lookup, staging, commit ---------------------------------------------------------

    def lookup(self, key: str, *, verify: bool = False) -> CachedExport | None:
        """The entry for ``key`` if its bytes are still the recorded bytes, else None.

        Unchanged files (same size, inode, mtime, ctime as recorded) pass without a read;
        any difference, or ``verify=True``, re-hashes. Damage is reported once and the entry
        evicted. A hit marks the entry used (best effort: a read-only root still serves it).
        """
        _check_key(key)
        if not self.trusted:
            return None
        record, why = self._read_record(key)
        if record is None:
            if why is not None:
                self._damaged(key, f"record {why}")
            return None
        problem, restat = self._check(record, full=verify)
        if problem is not None:
            self._damaged(key, problem)
            return None
        if restat and self.writable:
            self._refresh(record)
        now = time.time()
        with contextlib.suppress(OSError):
            os.utime(self.record_path(key), (now, now))
        return record.entry

    def _private_root(self) -> Path:
        """A process-private folder for exports when ``root`` is read-only (removed at exit)."""
        if self._private is None:
            self._private = Path(tempfile.mkdtemp(prefix="zoo-artifacts-"))
            atexit.register(shutil.rmtree, self._private, True)
            self._warn(f"the export cache {self.root} is not writable; exports are made in a "
                       "temporary folder and not cached (make ZOO_HOME writable, or point it "
                       "elsewhere)")
        return self._private

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh, empty folder to export into (``root/.staging-<id>``); removed on exit
        unless :meth:`commit` took it. A lock marks it as in use for :meth:`leftovers`."""
        ident = secrets.token_hex(8)
        lock = None
        if self.writable:
            base = self.root
            try:
                self.locks.mkdir(parents=True, exist_ok=True)
                lock = FileLock(str(self.locks / f"staging-{ident}.lock"), is_singleton=True)
                lock.acquire(timeout=0)
                folder = base / f".staging-{ident}"
                folder.mkdir()
            except OSError as exc:
                if lock is not None:
                    lock.release()
                raise _disk_error(exc, self.root, "create a staging folder") from exc
        else:
            folder = self._private_root() / f".staging-{ident}"
            folder.mkdir()
        try:
            yield folder
        finally:
            if os.path.lexists(folder):
                _remove(folder)
            if lock is not None:
                with contextlib.suppress(OSError):
                    Path(lock.lock_file).unlink(missing_ok=True)
                lock.release()

    def commit(self, key: str, staging: Path, *, manifest_file: str, model: str, format: str,
               artifact: str | None = None,
               provenance: dict[str, Any] | None = None) -> CachedExport:
        """Make ``staging`` the entry for ``key``: hash every file, move the folder in place
        (one rename), write the record last (atomically). An older entry for the key is
        replaced safely (its record goes first). Then the size budget is applied, sparing
        this entry. ``artifact`` names the artifact (default: ``manifest_file`` less
        ``.manifest.json``); ``provenance`` says where the bytes came from (see
        :func:`read_provenance`; default unknown) and travels with the entry."""
        _check_key(key)
        if not _bare(manifest_file):
            raise ValueError(f"manifest_file must be a bare file name: {manifest_file!r}")
        found, why = _tree(staging)
        if why is not None:
            raise ExportError(f"the export's staging folder {staging}: {why}")
        odd = sorted(rel for rel in found if not _safe_rel(rel))
        if odd:
            raise ExportError(f"the {format} export wrote a file whose name cannot be recorded: "
                              f"{odd[0]!r} (control characters or backslashes)")
        if not _label(model) or not _label(format):
            raise ValueError(f"model and format must be short printable names: {model!r}, "
                             f"{format!r}")
        if manifest_file not in found:
            raise ExportError(f"the export wrote no {manifest_file} into {staging}")
        if artifact is None:
            artifact = manifest_file[:-len(SIDECAR_SUFFIX)] \
                if manifest_file.endswith(SIDECAR_SUFFIX) else ""
        if artifact and not any(rel == artifact or rel.startswith(f"{artifact}/")
                                for rel in found):
            raise ExportError(f"the export wrote no artifact {artifact} into {staging}")
        sums = {rel: sha256_file(staging / rel) for rel in sorted(found)}
        base = self.root if self.writable else self._private_root()
        target = base / key
        now = time.time()
        data: dict[str, Any] = {
            "version": RECORD_VERSION, "key": key, "model": model, "format": format,
            "manifest_file": manifest_file, "artifact": artifact, "created": now,
            "last_used": now, "size": sum(st.st_size for st in found.values()),
            "provenance": read_provenance(provenance),
        }
        if not self.writable:
            _remove(target)
            os.rename(staging, target)
            return CachedExport(key, target, model, format, sums, manifest_file, data["size"],
                                now, now, artifact, data["provenance"])
        try:
            with self.lock(key):
                self._remove_entry(key)
                os.rename(staging, target)
                placed, why = _tree(target)
                if why is not None or set(placed) != set(sums):
                    raise ExportError(f"the entry {target} changed while it was committed")
                data["files"] = {rel: {"size": placed[rel].st_size, "sha256": sums[rel],
                                       "stat": _fingerprint(placed[rel])} for rel in sums}
                self.records.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.record_path(key), json.dumps(data, indent=1,
                                                                    sort_keys=True))
        except OSError as exc:
            raise _disk_error(exc, self.root, "store the export") from exc
        entry = CachedExport(key, target, model, format, sums, manifest_file, data["size"],
                             now, now, artifact, data["provenance"])
        if self.budget is not None:
            with contextlib.suppress(OSError):
                self.prune(self.budget, keep={key})
        return entry

    # -- install -------------------------------------------------------------------------

    def install(self, entry: CachedExport, out_dir: Path,
                names: builtins.list[str]) -> dict[str, str]:
        """Copy the top-level ``names`` of ``entry`` into ``out_dir``; returns ``{relative
        path: sha256}`` of every file now in place (a folder artifact: one item per file).

        Copies (reflink where the file system can), never links: an output never shares an
        inode with the cache. Each name appears atomically (temp name, then rename; a folder
        is swapped in whole). A destination that already holds the recorded bytes is left
        alone. Every copy is re-hashed against the record before it takes its name.
        """
        plan: dict[str, dict[str, str]] = {}
        for name in names:
            if not _bare(name):
                raise ValueError(f"not a bare file name: {name!r}")
            members = {rel: sha for rel, sha in entry.files.items()
                       if rel == name or rel.startswith(f"{name}/")}
            if not members:
                raise ValueError(f"{name!r} is not in the cache entry {entry.folder}")
            plan[name] = members
        out_dir.mkdir(parents=True, exist_ok=True)
        written: dict[str, str] = {}
        guard = self._try_hold(entry.key, BUSY_TIMEOUT) if self.writable and \
            entry.folder.parent == self.root else contextlib.nullcontext(True)
        with guard:
            for name, members in plan.items():
                if name in members:
                    self._install_file(entry, name, out_dir / name, members[name])
                else:
                    self._install_folder(entry, name, out_dir / name, members)
                written.update(members)
        return written

    def _copy_checked(self, entry: CachedExport, rel: str, dest: Path, sha: str) -> None:
        src = entry.folder / rel
        try:
            st = src.lstat()
        except OSError as exc:
            raise ExportError(f"the cached export {entry.folder} lost {rel} while it was being "
                              f"installed ({exc.strerror or exc}); run the command again") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ExportError(f"the cached export {entry.folder}: {rel} is not a regular file; "
                              "run `zoo cache verify`")
        _clone(src, dest)
        os.chmod(dest, FILE_MODE)
        if sha256_file(dest) != sha:
            raise ExportError(f"the cached export {entry.folder}: {rel} no longer hashes to "
                              "its recorded sha256; run `zoo cache verify` and the command "
                              "again")

    def _install_file(self, entry: CachedExport, name: str, dest: Path, sha: str) -> None:
        with contextlib.suppress(OSError):
            st = dest.lstat()
            if stat.S_ISREG(st.st_mode) and sha256_file(dest) == sha:
                return  # already the recorded bytes
            if stat.S_ISDIR(st.st_mode):
                raise ExportError(f"cannot install {name} into {dest.parent}: a folder of that "
                                  "name is in the way")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        try:
            self._copy_checked(entry, name, Path(tmp), sha)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _install_folder(self, entry: CachedExport, name: str, dest: Path,
                        members: dict[str, str]) -> None:
        if dest.is_dir() and not dest.is_symlink():
            found, why = _tree(dest)
            want = {rel.split("/", 1)[1]: sha for rel, sha in members.items()}
            if why is None and set(found) == set(want) and all(
                    sha256_file(dest / rel) == sha for rel, sha in want.items()):
                return
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=dest.parent))
        old: Path | None = None
        try:
            os.chmod(tmp, DIR_MODE)
            for rel, sha in members.items():
                part = tmp / rel.split("/", 1)[1]
                if not part.parent.is_dir():
                    part.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
                part.touch()
                self._copy_checked(entry, rel, part, sha)
            if os.path.lexists(dest):
                if dest.is_dir() and not dest.is_symlink() and _exchange(tmp, dest):
                    old = tmp  # tmp now holds the previous folder
                else:
                    old = Path(f"{tmp}.old")
                    os.rename(dest, old)
                    try:
                        os.rename(tmp, dest)
                    except OSError:
                        os.rename(old, dest)  # put the user's folder back
                        old = None
                        raise
            else:
                os.rename(tmp, dest)
        except BaseException:
            if old is None or old != tmp:
                _remove(tmp)
            raise
        if old is not None:
            _remove(old)

    # -- listing and housekeeping ----------------------------------------------------------

    def _keys(self) -> builtins.list[str]:
        return [name[:-5] for name in _listdir(self.records)
                if name.endswith(".json") and _HEX64.match(name[:-5])]

    def entries(self) -> builtins.list[CachedExport]:
        """Every entry with a sound record and a folder (not re-hashed), by model and file.
        Damaged records are reported and repaired."""
        found = []
        for key in self._keys():
            record, why = self._read_record(key)
            if why is not None:
                self._damaged(key, f"record {why}")
            elif record is not None and self.folder(key).is_dir():
                found.append(record.entry)
        return sorted(found, key=lambda e: (e.model, e.artifact_file, e.key))

    def list(self) -> builtins.list[CachedExport]:
        """:meth:`entries` (``cache.list()`` reads like the command it backs)."""
        return self.entries()

    def verify(self) -> builtins.list[tuple[CachedExport, bool, str]]:
        """Re-hash every entry: ``(entry, ok, "ok" or the problem)``; bad ones are evicted."""
        report = []
        for entry in self.entries():
            record, why = self._read_record(entry.key)
            problem = f"record {why}" if why else None
            if record is not None:
                problem, _restat = self._check(record, full=True)
            if problem is not None:
                self._damaged(entry.key, problem)
            report.append((entry, problem is None, problem or "ok"))
        return report

    def clear(self, model: str | None = None) -> builtins.list[CachedExport]:
        """Remove every entry (``model`` None: also leftovers of killed processes), or those of
        ``model``; returns what was removed. Entries in use by another process are kept."""
        removed = []
        for entry in self.entries():
            if model is not None and entry.model != model:
                continue
            with self._try_hold(entry.key, BUSY_TIMEOUT) as held:
                if held and self._remove_entry(entry.key):
                    removed.append(entry)
                elif not held:
                    self._warn(f"kept the cached export {entry.folder}: in use by "
                               f"{self.lock_holder(entry.key)}")
        if model is None:
            self.remove_leftovers()
        return removed

    def prune(self, max_bytes: int, *, keep: set[str] | frozenset[str] = frozenset()
              ) -> builtins.list[CachedExport]:
        """Evict least-recently-used entries (never those in ``keep``, nor any in use) until
        the cache holds at most ``max_bytes``; returns what was removed."""
        entries = sorted(self.entries(), key=lambda e: (e.last_used, e.key))
        total = sum(e.size for e in entries)
        removed = []
        for entry in entries:
            if total <= max_bytes:
                break
            if entry.key in keep:
                continue
            with self._try_hold(entry.key, 0) as held:
                if held and self._remove_entry(entry.key):
                    removed.append(entry)
                    total -= entry.size
        return removed

    def leftovers(self) -> builtins.list[Leftover]:
        """What killed processes left: staging folders and removals no live process holds,
        stale temp files, records without an entry, entries without a record, owner records of
        ended lock holders, and files of the older cache layout (``<key>.stat.json``)."""
        found: builtins.list[Leftover] = []

        def add(path: Path, kind: str) -> None:
            found.append(Leftover(path, kind, _size_of(path)))

        for name in _listdir(self.root):
            path = self.root / name
            if name.startswith(".staging-"):
                ident = name[len(".staging-"):]
                lock = self.locks / f"staging-{ident}.lock"
                if self._lock_free(f"staging-{ident}") and (lock.exists() or _old(path)):
                    add(path, "staging folder of an interrupted export")
            elif name.startswith(".trash-") and self._lock_free(name[7:71]):
                add(path, "entry whose removal was interrupted")
            elif _is_stale_temp(path):
                add(path, "temp file of an interrupted write")
            elif _HEX64.match(name) and path.is_dir() and \
                    not self.record_path(name).exists() and self._lock_free(name):
                add(path, "entry without a record (an interrupted commit or an older zoo)")
            elif (name.endswith(".stat.json") and _HEX64.match(name[:-10])) or \
                    (name.endswith(".lock") and _HEX64.match(name[:-5])):
                add(path, "file of an older zoo's cache layout")
        for name in _listdir(self.records):
            path = self.records / name
            if _is_stale_temp(path):
                add(path, "temp file of an interrupted write")
            elif name.endswith(".json") and _HEX64.match(name[:-5]) and \
                    not self.folder(name[:-5]).is_dir() and self._lock_free(name[:-5]):
                add(path, "record of a missing entry")
        for name in _listdir(self.locks):
            path = self.locks / name
            if _is_stale_temp(path):
                add(path, "temp file of an interrupted write")
            elif name.endswith(".owner.json") and self._lock_free(name[:-11]):
                add(path, "owner record of an ended process")
            elif name.startswith("staging-") and name.endswith(".lock") and \
                    not (self.root / f".{name[:-5]}").exists() and self._lock_free(name[:-5]):
                add(path, "lock of an ended export")
        return sorted(found, key=lambda x: str(x.path))

    def remove_leftovers(self) -> builtins.list[Leftover]:
        """Delete :meth:`leftovers`; returns what was removed."""
        removed = []
        for item in self.leftovers():
            key = self._leftover_key(item.path)
            if key is None:
                if _remove(item.path):
                    removed.append(item)
                    if item.path.name.startswith(".staging-"):  # and its (free) lock
                        _remove(self.locks / f"{item.path.name[1:]}.lock")
                continue
            with self._try_hold(key, 0) as held:  # a commit that started meanwhile wins
                if held and self._still_orphan(item.path) and _remove(item.path):
                    removed.append(item)
        return removed

    def _leftover_key(self, path: Path) -> str | None:
        """The entry key whose lock guards removing ``path`` (None: no entry's)."""
        name, parent = path.name, path.parent
        if parent == self.root and name.startswith(".trash-"):
            return name[7:71]
        if parent == self.root and _HEX64.match(name):
            return name
        if parent == self.records and _HEX64.match(name[:-5]):
            return name[:-5]
        return None

    def _still_orphan(self, path: Path) -> bool:
        """Re-checked under the key's lock: the leftover is still one."""
        if path.parent == self.root and _HEX64.match(path.name):
            return not self.record_path(path.name).exists()
        if path.parent == self.records:
            return not self.folder(path.name[:-5]).is_dir()
        return True


def _home() -> Path:
    from zoo.paths import zoo_home

    return zoo_home()


def _old(path: Path) -> bool:
    try:
        return time.time() - path.lstat().st_mtime >= STALE_TEMP_AGE
    except OSError:
        return False
