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
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from zoo._core.fs import atomic_write_text, sha256_file
from zoo._core.names import SIDECAR_SUFFIX
from zoo.errors import ExportError, UsageError  # noqa: F401 (UsageError: re-exported)
from zoo.export.cache.budget import (
    BUDGET_ENV,
    _human,  # noqa: F401 (re-exported for callers)
    cache_budget,
    parse_size,
)
from zoo.export.cache.entries import (
    RECORD_VERSION,
    CachedExport,
    Leftover,
    _bare,
    _check_key,
    _fingerprint,
    _label,
    _safe_rel,
    read_provenance,
)
from zoo.export.cache.files import _disk_error, _remove, _tree
from zoo.export.cache.housekeeping import HousekeepingMixin
from zoo.export.cache.install import InstallMixin

__all__ = ["BUDGET_ENV", "ArtifactCache", "CachedExport", "Leftover", "cache_budget",
           "parse_size", "read_provenance"]


class ArtifactCache(HousekeepingMixin, InstallMixin):
    """The export cache (``root`` defaults to ``ZOO_HOME/artifacts``).

    ``warn`` receives each damage report (once per problem); by default a ``zoo: warning:``
    line on stderr. ``budget`` (bytes) defaults to ``ZOO_CACHE_MAX``; a bad value raises
    :class:`UsageError` here, before any export work.
    """

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
               provenance: dict[str, Any] | None = None,
               known: dict[str, str] | None = None) -> CachedExport:
        """Make ``staging`` the entry for ``key``: hash every file, move the folder in place
        (one rename), write the record last (atomically). An older entry for the key is
        replaced safely (its record goes first). Then the size budget is applied, sparing
        this entry. ``artifact`` names the artifact (default: ``manifest_file`` less
        ``.manifest.json``); ``provenance`` says where the bytes came from (see
        :func:`read_provenance`; default unknown) and travels with the entry. ``known``
        holds the sha256 of files the caller itself wrote into ``staging`` and hashed there
        (the pipeline's artifact), so they are not read again."""
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
        known = known or {}
        sums = {rel: known.get(rel) or sha256_file(staging / rel) for rel in sorted(found)}
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
