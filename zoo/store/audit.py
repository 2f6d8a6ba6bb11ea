"""Auditing a store (``zoo store verify``): every record, object, weights file and index
snapshot re-checked."""

from __future__ import annotations

from typing import Any

from zoo._core.names import MAX_SUMS_BYTES
from zoo.store.base import (
    OBJECT_KEY,
    OBJECTS,
    RECORD_KEY,
    RECORDS,
    WEIGHTS,
    WEIGHTS_KEY,
    Progress,
    VerifyReport,
    _no_progress,
)
from zoo.store.indexing import IndexMixin
from zoo.store.keys import PublicKey
from zoo.store.record import (
    SUMS_NAME,
    signature_refusal,
    signature_status,
)
from zoo.store.transport import SizeMismatch


class AuditMixin(IndexMixin):
    """Re-check everything a store holds; change nothing."""

    def verify(self, trusted: list[PublicKey] | None = None,
               progress: Progress | None = None) -> VerifyReport:
        """Re-check every record (name, fields, signature, manifest) and every object it names
        (present, size, sha256: each distinct object is downloaded and hashed once) and every
        weights file (its bytes must hash to its name). Lists objects no record names and keys
        that are not part of the layout. Changes nothing."""
        say = progress or _no_progress
        report = VerifyReport(self.url)
        self.transport.check_root()  # a missing or unreachable store is an error, not empty
        objects = dict(self.transport.list(OBJECTS))
        record_keys = [k for k, _ in self.transport.list(RECORDS)]
        report.stray = [k for k in record_keys if not RECORD_KEY.fullmatch(k)] + \
            [k for k in objects if not OBJECT_KEY.fullmatch(k)]
        record_keys = [k for k in record_keys if RECORD_KEY.fullmatch(k)]
        hashed: dict[str, str | None] = {}  # sha -> problem (None: fine)
        referenced: set[str] = set()
        weights = self.transport.list(WEIGHTS)
        todo = sum(size for key, size in objects.items() if OBJECT_KEY.fullmatch(key)) + \
            sum(size for key, size in weights if WEIGHTS_KEY.fullmatch(key))
        tombs = self.tombstones()
        for key, record, error in self._read_records(record_keys):
            entry: dict[str, Any] = {"record": key, "problems": []}
            report.records.append(entry)
            if record is None:
                entry["problems"].append(error)
                continue
            entry["revoked"] = self._revoked(key, record, tombs, trusted)
            st = record.statement
            entry.update(model=st.model, format=st.format, precision=st.precision,
                         identity=st.identity, published_at=st.published_at)
            status = signature_status(record, trusted)
            entry["signature"] = status
            entry["signed_by"] = record.signature.public_key.fingerprint \
                if record.signature else None
            refusal = signature_refusal(status, record.signature, bool(trusted))
            if refusal:
                entry["problems"].append(refusal)
            for obj in st.objects:
                referenced.add(obj.sha256)
                if obj.sha256 not in hashed:
                    hashed[obj.sha256] = self._check_object(obj.sha256, obj.size, objects,
                                                            report, say, todo)
                if hashed[obj.sha256]:
                    entry["problems"].append(f"{obj.path}: {hashed[obj.sha256]}")
            if not entry["problems"]:
                blobs = self.transport.read_many(
                    [OBJECTS + st.manifest_sha256] + ([OBJECTS + o.sha256 for o in st.objects
                                                       if o.path == SUMS_NAME]), MAX_SUMS_BYTES)
                manifest = blobs[OBJECTS + st.manifest_sha256]
                sums = next((v for k, v in blobs.items() if k != OBJECTS + st.manifest_sha256),
                            None)
                if isinstance(manifest, Exception) or isinstance(sums, Exception):
                    entry["problems"].append("manifest or SHA256SUMS unreadable")
                else:
                    entry["problems"] += self._consistency(st, manifest, sums)
        for key, size in weights:
            match = WEIGHTS_KEY.fullmatch(key)
            if match is None:
                report.stray.append(key)
                continue
            problem = self._check_blob(key, match.group(1), size, report, say, todo)
            report.weights.append({"key": key, "size": size, "problem": problem})
        report.index = self.audit_index()
        if self.transport.local is not None:
            report.leftovers = [k for k, _ in self.transport.list("tmp/")]
        # symbolic links, FIFOs, devices in a file:// store: refused, never read
        report.stray += sorted(k for k in self.transport.refused
                               if k not in report.stray and not RECORD_KEY.fullmatch(k))
        report.unreferenced = sorted(OBJECTS + sha for key in objects
                                     if (m := OBJECT_KEY.fullmatch(key))
                                     and (sha := m.group(1)) not in referenced)
        return report

    def _check_object(self, sha: str, size: int, present: dict[str, int], report: VerifyReport,
                      say: Progress, total: int) -> str | None:
        key = OBJECTS + sha
        if key not in present:
            return "object missing"
        if key in self.transport.refused:
            return self.transport.refused[key]
        if present[key] != size:
            return f"object has {present[key]} bytes, the record says {size}"
        return self._check_blob(key, sha, size, report, say, total)

    def _check_blob(self, key: str, sha: str, size: int, report: VerifyReport, say: Progress,
                    total: int) -> str | None:
        """Download ``key`` (``size`` bytes) and check that it hashes to ``sha``."""
        if key in self.transport.refused:
            return self.transport.refused[key]
        start = report.bytes_hashed

        def step(n: int) -> None:
            report.bytes_hashed += n
            say(sha[:16], report.bytes_hashed, total)

        try:
            actual = self.transport.get(key, None, size, step)
        except FileNotFoundError:
            return "object missing"
        except SizeMismatch:
            return "object size differs from the record"
        report.bytes_hashed = start + size
        report.objects_checked += 1
        if actual != sha:
            return f"object bytes hash to {actual[:16]}…, not {sha[:16]}… (corrupted)"
        return None
