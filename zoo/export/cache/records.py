"""Reading, checking, refreshing and evicting export-cache records: the trust layer. A record
lives outside its entry and every hit is re-proved from it."""

from __future__ import annotations

import contextlib
import json
import os
import secrets

from zoo._core.fs import atomic_write_text, read_json_record, sha256_file
from zoo.export.cache.base import CacheBase
from zoo.export.cache.entries import (
    BUSY_TIMEOUT,
    HEX64,
    RECORD_VERSION,
    CachedExport,
    _fingerprint,
    _is_int,
    _is_num,
    _label,
    _Record,
    _safe_rel,
    read_provenance,
)
from zoo.export.cache.files import (
    _remove,
    _tree,
)


class RecordsMixin(CacheBase):
    """Record trust: parse, check against the bytes, refresh fingerprints, evict damage."""

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
                    not isinstance(meta.get("sha256"), str) or not HEX64.match(meta["sha256"]):
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
