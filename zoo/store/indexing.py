"""Listing a store through its index, and writing the index (``zoo store index``).

A reader of the whole store (:meth:`IndexMixin.records`) asks for the newest snapshot head
(``index/snapshots/``), its parts (concurrently; kept locally by sha256 under
``ZOO_HOME/store/index``) and the journal entries written since (``index/journal/``, listed
from an hour before the snapshot, S3 ``StartAfter``), then checks every record it shows exactly
as one read from ``records/``: its bytes hash to its key's name, it parses strictly and names
its identity, its signature is checked against the trusted keys, and tombstones withdraw it.
A snapshot is used for the listing only when its signature verifies, and, with trusted keys,
only when one of them signed it; otherwise (and with ``full``, or when there is no index, as
in stores written by older zoo versions) ``records/`` is listed key by key and the index
serves only as copies of record files, each used only for a key the listing shows and only
when its bytes hash to that key's name. Reading never writes to the store.

What the index cannot know: a record deleted from ``records/`` after the snapshot is still
in it (readers say where each listing came from: :attr:`IndexMixin.listing`), and a record
written without a journal entry after it (by a zoo older than the index) appears at the next
``zoo store index`` (or with ``full``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zoo._core.log import warn
from zoo.store.base import RECORD_KEY, RECORDS, Listed
from zoo.store.errors import StoreError
from zoo.store.index import (
    JOURNAL,
    JOURNAL_KEY,
    MAX_HEAD_BYTES,
    MAX_PART_BYTES,
    PART_KEY,
    SKEW,
    SNAPSHOT_KEY,
    SNAPSHOTS,
    IndexFormatError,
    Snapshot,
    journal_record,
    make_snapshot,
    pack_parts,
    parse_snapshot,
    stamp,
    stamp_before,
    unpack_part,
)
from zoo.store.keys import PublicKey, SigningKey
from zoo.store.listing import RecordsMixin
from zoo.store.record import Record, now_utc, signature_refusal, signature_status

HEADS_TRIED = 16  # snapshot heads a reader reads (newest first) before listing records/
#                  key by key; heads are small, their parts are read for the one used only
PART_BATCH = 8  # parts read at once (at most 8 x MAX_PART_BYTES in memory)
AUDITED_PARTS = 3  # newest snapshot heads whose parts `zoo store verify` reads
JOURNAL_ADVICE = 1000  # records listed key by key (or journal entries) above which a reader
#                       says that `zoo store index` would help


@dataclass
class ListingInfo:
    """Where a listing of the whole store came from."""

    source: str  # "index": a snapshot and its journal; "records": records/ key by key
    snapshot: str | None = None  # the snapshot head's key
    taken_at: str | None = None
    indexed: int = 0  # records the snapshot holds
    journal: int = 0  # records named by journal entries after it (and not in it)
    signer: str | None = None  # the fingerprint of the key that signed the snapshot

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "snapshot": self.snapshot, "taken_at": self.taken_at,
                "indexed": self.indexed, "journal": self.journal, "signed_by": self.signer}


@dataclass(frozen=True)
class IndexResult:
    """What ``zoo store index`` wrote."""

    store: str
    key: str
    snapshot: Snapshot
    parts_written: int
    skipped: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        sig = self.snapshot.signature
        return {"store": self.store, "snapshot": self.key, "taken_at": self.snapshot.taken_at,
                "records": self.snapshot.records,
                "parts": [p.key for p in self.snapshot.parts],
                "parts_written": self.parts_written,
                "signed_by": sig.public_key.fingerprint if sig else None,
                "skipped": self.skipped}


@dataclass
class _Loaded:
    key: str
    snapshot: Snapshot
    copies: dict[str, bytes]  # record key -> bytes (not yet checked against the key)


class _Refused(Exception):
    """A snapshot head or one of its parts cannot be used (the message says why)."""


class IndexMixin(RecordsMixin):
    """The whole store listed through its index; the index written."""

    listing: ListingInfo | None = None

    def records(self, pattern: str | None = None, trusted: list[PublicKey] | None = None, *,
                full: bool = False) -> Iterator[Listed]:
        """Every record in the store (through its index, see the module docstring; ``full``:
        ``records/`` listed key by key), in key order; those whose model name does not match
        the glob ``pattern`` are left out. A record that cannot be read or parsed is yielded
        with ``error`` set. :attr:`listing` says where the listing came from."""
        self.transport.check_root()  # a missing or unreachable store is an error, not empty
        loaded = None if full else self._load_index(trusted)
        copies = loaded.copies if loaded else {}
        missing_ok: frozenset[str] = frozenset()
        newer: set[str] | None = None
        if loaded is not None:
            after = f"{JOURNAL}{stamp_before(loaded.snapshot.taken_at)}"
            try:
                newer = {rec for key, _ in self.transport.list(JOURNAL, start_after=after)
                         if (named := journal_record(key)) and (rec := named[1]) not in copies}
            except StoreError as exc:
                warn(f"store {self.url}: cannot list its index's journal ({exc}); listing "
                     "records/ key by key")
        if loaded is not None and newer is not None:
            snap = loaded.snapshot
            keys = sorted({*copies, *newer})
            missing_ok = frozenset(newer)  # a publish in flight, or a deleted record
            sig = snap.signature
            self.listing = ListingInfo("index", loaded.key, snap.taken_at, len(copies),
                                       len(newer), sig.public_key.fingerprint if sig else None)
            if len(newer) > JOURNAL_ADVICE:
                warn(f"store {self.url}: {len(newer)} records were published since the index "
                     f"of {snap.taken_at[:19]}Z; `zoo store index` makes listings faster")
        else:
            keys = [k for k, _size in self.transport.list(RECORDS)]
            self.listing = ListingInfo("records")
            if loaded is None and not full and len(keys) > JOURNAL_ADVICE:
                warn(f"store {self.url} holds {len(keys)} records and no index this reader "
                     "may use; `zoo store index --sign KEY` (by a writer) makes listing it a "
                     "few requests")
        tombs = self.tombstones()
        batch: list[tuple[str, Record | None, str | None]] = []
        for item in self._read_records(keys, copies=copies, missing_ok=missing_ok):
            record = item[1]
            if record is not None and pattern and not fnmatch.fnmatchcase(
                    record.statement.model, pattern):
                continue
            batch.append(item)
            if len(batch) >= 1024:
                yield from self._checked(batch, tombs, trusted)
                batch = []
        yield from self._checked(batch, tombs, trusted)

    def _checked(self, batch: list[tuple[str, Record | None, str | None]], tombs: list[Any],
                 trusted: list[PublicKey] | None) -> Iterator[Listed]:
        """Listed items with their signature status (verified on two threads: the Ed25519
        check releases the GIL) and revocation."""
        records = [r for _k, r, _e in batch if r is not None]
        with ThreadPoolExecutor(2) as pool:  # two tasks, not one per record
            halves = pool.map(lambda part: [signature_status(r, trusted) for r in part],
                              [records[:len(records) // 2], records[len(records) // 2:]])
            statuses = iter([status for half in halves for status in half])
        for key, record, error in batch:
            status = next(statuses) if record is not None else None
            yield Listed(key, record, error, status, self._revoked(key, record, tombs, trusted))

    # -- reading the index ----------------------------------------------------------------

    def _part_cache(self) -> Path | None:
        """This store's folder of checked index parts (one per store: it is pruned)."""
        if not self.record_cache:
            return None
        return self.record_cache.parent / "index" / hashlib.sha256(
            self.url.encode()).hexdigest()[:16]

    def _load_index(self, trusted: list[PublicKey] | None) -> _Loaded | None:
        """The newest snapshot that may stand for the listing, with its parts' record copies,
        or None. Newest first, up to HEADS_TRIED heads are read: one stamped later than now
        plus SKEW (a clock ahead, or planted to hide later publishes) is not used, nor one
        whose signature does not meet the rule (see the module docstring); the parts of a
        head that is not used are never read. Each refusal is one warning."""
        try:
            keys = [k for k, _size in self.transport.list(SNAPSHOTS) if SNAPSHOT_KEY.fullmatch(k)]
        except StoreError as exc:
            warn(f"store {self.url}: cannot list its index ({exc}); listing records/")
            return None
        latest = _latest_stamp()
        future = [k for k in keys if _head_stamp(k) > latest]
        if future:
            warn(f"store {self.url}: {len(future)} index snapshot(s) dated in the future (e.g. "
                 f"{future[0]}); not used (a writer's clock is ahead, or they were planted)")
        for key in sorted(set(keys) - set(future), reverse=True)[:HEADS_TRIED]:
            try:
                snap = self._read_head(key)
                status = snap.signature_status(trusted)
                refusal = signature_refusal(status, snap.signature, bool(trusted))
                if refusal is not None:
                    warn(f"store {self.url}: index {key}: {refusal}; not used "
                         "(`zoo store index --sign KEY` with a trusted key)")
                    continue
                return _Loaded(key, snap, self._read_parts(snap))
            except _Refused as exc:
                warn(f"store {self.url}: index {key}: {exc}; not used")
        return None

    def _read_head(self, key: str) -> Snapshot:
        match = SNAPSHOT_KEY.fullmatch(key)
        assert match is not None
        try:
            blob = self.transport.read_many([key], MAX_HEAD_BYTES)[key]
        except StoreError as exc:
            raise _Refused(f"unreadable ({exc})") from None
        if isinstance(blob, Exception):
            raise _Refused(f"unreadable ({blob})")
        if len(blob) > MAX_HEAD_BYTES:
            raise _Refused(f"more than {MAX_HEAD_BYTES} bytes")
        if hashlib.sha256(blob).hexdigest() != match.group(2):
            raise _Refused("its bytes do not match its name (altered)")
        try:
            snap = parse_snapshot(blob)
        except IndexFormatError as exc:
            raise _Refused(f"not a valid snapshot: {exc}") from None
        if stamp(snap.taken_at) != match.group(1):
            raise _Refused("named with another time than the one it holds")
        return snap

    def _read_parts(self, snap: Snapshot, *, prune: bool = True) -> dict[str, bytes]:
        """Every record copy of ``snap``'s parts: from the local part cache, else read
        PART_BATCH at a time; each part's bytes must be the ones the head names. With
        ``prune``, the part cache then keeps only this snapshot's parts."""
        folder = self._part_cache()
        copies: dict[str, bytes] = {}
        for start in range(0, len(snap.parts), PART_BATCH):
            refs = snap.parts[start:start + PART_BATCH]
            blobs: dict[str, bytes | Exception] = {}
            for ref in refs:
                with contextlib.suppress(OSError):
                    if folder is not None:
                        kept = (folder / f"{ref.sha256}.json").read_bytes()
                        if hashlib.sha256(kept).hexdigest() == ref.sha256:
                            blobs[ref.key] = kept
            try:
                fetched = self.transport.read_many(
                    [r.key for r in refs if r.key not in blobs], MAX_PART_BYTES)
            except StoreError as exc:
                raise _Refused(f"its parts are unreadable ({exc})") from None
            blobs.update(fetched)
            for ref in refs:
                blob = blobs.pop(ref.key)
                if not isinstance(blob, bytes):
                    raise _Refused(f"part {ref.key} unreadable ({blob})")
                if len(blob) != ref.size or hashlib.sha256(blob).hexdigest() != ref.sha256:
                    raise _Refused(f"part {ref.key}: its bytes are not the ones the snapshot "
                                   "names (altered or truncated)")
                try:
                    copies.update(unpack_part(blob, ref.records))
                except IndexFormatError as exc:
                    raise _Refused(f"part {ref.key}: {exc}") from None
                if ref.key in fetched and folder is not None:
                    _keep(folder / f"{ref.sha256}.json", blob)
        if folder is not None and prune:
            _prune_parts(folder, {f"{ref.sha256}.json" for ref in snap.parts})
        return copies

    def audit_index(self) -> list[dict[str, str]]:
        """``{"key", "problem"}`` for each index object that fails its checks: a snapshot head
        (its name, bytes, fields, a date in the future, a signature that does not verify; the
        newest AUDITED_PARTS with their parts and every record copy, which must hash to its
        key's name) or a key under ``index/`` that is not part of the layout. Changes
        nothing."""
        problems: list[dict[str, str]] = []
        heads = []
        for key, _size in self.transport.list("index/"):
            if SNAPSHOT_KEY.fullmatch(key):
                heads.append(key)
            elif not (JOURNAL_KEY.fullmatch(key) or PART_KEY.fullmatch(key)):
                problems.append({"key": key, "problem": "not part of the store layout"})
        latest = _latest_stamp()
        for n, key in enumerate(sorted(heads, reverse=True)):
            try:
                if _head_stamp(key) > latest:
                    raise _Refused("dated in the future: readers do not use it (a writer's "
                                   "clock is ahead, or it was planted)")
                snap = self._read_head(key)
                if snap.signature_status(None) == "invalid":
                    raise _Refused("its signature does not verify (altered or signed wrongly)")
                copies = self._read_parts(snap, prune=False) if n < AUDITED_PARTS else {}
            except _Refused as exc:
                problems.append({"key": key, "problem": str(exc)})
                continue
            for record_key, blob in copies.items():
                match = RECORD_KEY.fullmatch(record_key)
                if match and hashlib.sha256(blob).hexdigest() != match.group(2):
                    problems.append({"key": key, "problem": f"its copy of {record_key} does "
                                     "not hash to its name (altered)"})
        return problems

    # -- writing the index ----------------------------------------------------------------

    def index(self, sign_key: SigningKey | None = None) -> IndexResult:
        """Write a snapshot of ``records/`` (needs write access): every record that parses,
        in parts, then the head, last, signed with ``sign_key``. Records that do not parse are
        left out (``skipped``). Nothing is deleted; older snapshots stay."""
        self.transport.check_root()
        taken_at = now_utc()  # before the listing: journal entries from then on are read
        keys = [k for k, _size in self.transport.list(RECORDS)]
        loaded = self._load_index(None)
        keep: dict[str, bytes] = {}
        skipped = [{"record": k, "error": str(e)} for k, r, e in self._read_records(
            keys, copies=loaded.copies if loaded else None, keep=keep) if r is None]
        parts = pack_parts(keep)
        written = 0
        for ref, body in parts:
            if not self.transport.holds(ref.key, body):
                self.transport.write_new(ref.key, body)
                written += 1
        snap = make_snapshot(taken_at, [ref for ref, _ in parts], sign_key, self.publisher)
        self.transport.write_new(snap.key, snap.to_bytes())
        return IndexResult(self.url, snap.key, snap, written, skipped)


def _latest_stamp() -> str:
    """The newest stamp a usable snapshot head may carry: now plus SKEW."""
    return stamp((datetime.now(timezone.utc) + SKEW).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def _head_stamp(key: str) -> str:
    match = SNAPSHOT_KEY.fullmatch(key)
    assert match is not None
    return match.group(1)


def _prune_parts(folder: Path, wanted: set[str]) -> None:
    """Remove the cached parts of older snapshots (what a store's readers keep is bounded
    by one snapshot's parts)."""
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            if path.name.endswith(".json") and path.name not in wanted:
                path.unlink(missing_ok=True)


def _keep(path: Path, blob: bytes) -> None:
    """Keep a checked part in the local cache (re-proved by sha256 on every read)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
