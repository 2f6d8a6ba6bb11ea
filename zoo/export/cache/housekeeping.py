"""Listing, verifying, clearing and pruning the export cache, and what killed processes
left behind."""

from __future__ import annotations

import builtins
from pathlib import Path

from zoo.export.cache.entries import (
    BUSY_TIMEOUT,
    HEX64,
    CachedExport,
    Leftover,
)
from zoo.export.cache.files import (
    _is_stale_temp,
    _listdir,
    _old,
    _remove,
    _size_of,
)
from zoo.export.cache.records import RecordsMixin


class HousekeepingMixin(RecordsMixin):
    """Listing and garbage collection."""

    def _keys(self) -> builtins.list[str]:
        return [name[:-5] for name in _listdir(self.records)
                if name.endswith(".json") and HEX64.match(name[:-5])]

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
            elif HEX64.match(name) and path.is_dir() and \
                    not self.record_path(name).exists() and self._lock_free(name):
                add(path, "entry without a record (an interrupted commit or an older zoo)")
            elif (name.endswith(".stat.json") and HEX64.match(name[:-10])) or \
                    (name.endswith(".lock") and HEX64.match(name[:-5])):
                add(path, "file of an older zoo's cache layout")
        for name in _listdir(self.records):
            path = self.records / name
            if _is_stale_temp(path):
                add(path, "temp file of an interrupted write")
            elif name.endswith(".json") and HEX64.match(name[:-5]) and \
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
        if parent == self.root and HEX64.match(name):
            return name
        if parent == self.records and HEX64.match(name[:-5]):
            return name[:-5]
        return None

    def _still_orphan(self, path: Path) -> bool:
        """Re-checked under the key's lock: the leftover is still one."""
        if path.parent == self.root and HEX64.match(path.name):
            return not self.record_path(path.name).exists()
        if path.parent == self.records:
            return not self.folder(path.name[:-5]).is_dir()
        return True
