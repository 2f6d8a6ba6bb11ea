"""Reading records and tombstones from a store: parsed, checked against their names,
remembered locally; finding and revoking a record.

Records already read are remembered under ``ZOO_HOME/store/records`` (by sha256, re-proved on
every read). A caller may hand :meth:`RecordsMixin._read_records` *copies* of record files
(from the store's index, :mod:`zoo.store.indexing`): a copy is used only for its key and only
when its bytes hash to the name in that key; then it gets every check a record read on its own
gets (parse, identity; the caller adds signature and tombstones). A copy that does not match
is named in a warning and the record itself is read instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zoo.store.base import (
    RECORD_KEY,
    RECORDS,
    Listed,
    StoreBase,
    _tombstone,
)
from zoo.store.errors import StoreConfigError, StoreRefusedError
from zoo.store.keys import PublicKey, SigningKey
from zoo.store.record import (
    HEX64,
    MAX_RECORD_BYTES,
    Record,
    RecordError,
    parse_record,
)
from zoo.store.revocation import KEY as REVOCATION_KEY
from zoo.store.revocation import MAX_BYTES as MAX_REVOCATION_BYTES
from zoo.store.revocation import PREFIX as REVOCATIONS
from zoo.store.revocation import (
    Revocation,
    make_revocation,
    parse_revocation,
    revoked_by,
)
from zoo.store.revocation import describe as describe_revocation

CHUNK = 2048  # records requested at once (the transport reads them concurrently)


class RecordsMixin(StoreBase):
    """Records and revocations: read, check, list, look up, revoke."""

    def _cached(self, digest: str) -> bytes | None:
        if self.record_cache is None:
            return None
        try:
            blob = (self.record_cache / f"{digest}.json").read_bytes()
        except OSError:
            return None
        return blob if hashlib.sha256(blob).hexdigest() == digest else None

    def _remember(self, digest: str, blob: bytes) -> None:
        """Keep a checked record file in the local record cache. No fsync: the cache is
        re-proved by sha256 on every read, so a torn file is only a miss."""
        if self.record_cache is None:
            return
        path = self.record_cache / f"{digest}.json"
        tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            self.record_cache.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(blob)
            os.replace(tmp, path)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)

    def _read_records(self, keys: list[str], *, copies: dict[str, bytes] | None = None,
                      keep: dict[str, bytes] | None = None,
                      missing_ok: frozenset[str] = frozenset(),
                      ) -> Iterator[tuple[str, Record | None, str | None]]:
        """(key, record, error) for each record key, CHUNK at a time: from ``copies`` (key ->
        bytes, e.g. the store's index; used only when the bytes hash to the key's name), the
        local record cache, else read from the store concurrently. ``keep`` receives the bytes
        of every record that parsed; keys in ``missing_ok`` that the store does not hold are
        left out instead of reported."""
        from zoo._core.log import warn

        digests = {k: m.group(2) for k in keys if (m := RECORD_KEY.fullmatch(k))}
        copies = copies or {}
        for i in range(0, len(keys), CHUNK):
            chunk = keys[i:i + CHUNK]
            blobs: dict[str, bytes | Exception] = {}
            for key in chunk:
                copy = copies.get(key)
                if copy is None or key not in digests:
                    continue
                if hashlib.sha256(copy).hexdigest() == digests[key]:
                    blobs[key] = copy
                else:
                    warn(f"store {self.url}: the index's copy of {key} does not hash to its "
                         "name (altered); reading the record itself")
            rest = [k for k in chunk if k not in blobs]
            cached = self._cached_many([(k, digests[k]) for k in rest if k in digests])
            blobs.update(cached)
            got = self.transport.read_many([k for k in rest if k not in cached],
                                           MAX_RECORD_BYTES)
            blobs.update(got)
            parsed = [(key, *self._parse(key, blobs[key], remember=False)) for key in chunk
                      if not (key in missing_ok and isinstance(blobs[key], FileNotFoundError))]
            new: dict[str, bytes] = {}  # read from the store, checked: for the record cache
            for key, record, _error in parsed:
                body = blobs[key]
                if record is not None and isinstance(body, bytes):
                    if keep is not None:
                        keep[key] = body
                    if key in got:
                        new[digests[key]] = body
            if new:
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda item: self._remember(*item), new.items()))
            yield from parsed

    def _cached_many(self, wanted: list[tuple[str, str]]) -> dict[str, bytes]:
        """key -> bytes of the records (key, digest) the local record cache holds, read on
        a few threads, each taking a slice (not one task per file)."""
        if self.record_cache is None or not wanted:
            return {}
        slices = [wanted[j::4] for j in range(4)]

        def read(part: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
            return [(k, blob) for k, d in part if (blob := self._cached(d)) is not None]

        with ThreadPoolExecutor(4) as pool:
            return {k: blob for part in pool.map(read, slices) for k, blob in part}

    def _parse(self, key: str, blob: bytes | Exception, remember: bool = True
               ) -> tuple[Record | None, str | None]:
        match = RECORD_KEY.fullmatch(key)
        if match is None:
            return None, "not a record name (records/<identity>/<sha256>.json)"
        if isinstance(blob, Exception):
            return None, "disappeared while listing" if isinstance(blob, FileNotFoundError) \
                else f"unreadable: {blob}"
        if hashlib.sha256(blob).hexdigest() != match.group(2):
            return None, "its bytes do not match its name (altered after publishing)"
        try:
            record = parse_record(blob)
        except RecordError as exc:
            return None, f"not a valid record: {exc}"
        if record.statement.identity != match.group(1):
            return None, "filed under another identity than it names"
        if remember:
            self._remember(match.group(2), blob)
        return record, None

    def lookup(self, identity: str, trusted: list[PublicKey] | None = None) -> list[Listed]:
        """The records for one export identity (parsed or with the reason they are not),
        each marked ``revoked`` when a tombstone signed by one of ``trusted`` or by the
        record's own signer withdraws it."""
        if not HEX64.fullmatch(identity):
            raise StoreConfigError(f"{identity[:80]!r} is not an export identity (64 hex)")
        keys = [k for k, _ in self.transport.list(f"{RECORDS}{identity}/")]
        if not keys:
            return []
        with ThreadPoolExecutor(1) as pool:  # the tombstones' listing overlaps the reads
            tombs = pool.submit(self.tombstones, identity)
            found = list(self._read_records(keys))
            revocations = tombs.result()
        return [Listed(k, r, e, None, self._revoked(k, r, revocations, trusted))
                for k, r, e in found]

    # -- revocation -----------------------------------------------------------------------

    def _tomb_memory(self) -> Path | None:
        return self.record_cache.parent / "revocations" if self.record_cache else None

    def tombstones(self, identity: str | None = None) -> list[Revocation]:
        """Every revocation for ``identity`` (None: all) in the store, plus those this machine
        has seen before (kept under ``ZOO_HOME/store/revocations``: deleting a tombstone from
        the store does not bring a record back). Files whose bytes do not hash to their name
        or do not parse are ignored (``zoo store verify`` reports them)."""
        prefix = REVOCATIONS + (f"{identity}/" if identity else "")
        keys = [k for k, _ in self.transport.list(prefix) if REVOCATION_KEY.fullmatch(k)]
        found: dict[str, Revocation] = {}
        for key, blob in self.transport.read_many(keys, MAX_REVOCATION_BYTES).items():
            tomb = _tombstone(key, blob)
            if tomb is not None:
                found[tomb.digest] = tomb
        memory = self._tomb_memory()
        if memory is not None:
            for digest, tomb in list(found.items()):
                if not (memory / f"{digest}.json").exists():
                    with contextlib.suppress(OSError):
                        from zoo._core.fs import atomic_write_bytes

                        atomic_write_bytes(memory / f"{digest}.json", tomb.to_bytes())
            with contextlib.suppress(OSError):
                for path in sorted(memory.glob("*.json")):
                    if path.stem in found or not HEX64.fullmatch(path.stem):
                        continue
                    try:
                        tomb = parse_revocation(path.read_bytes()[:MAX_REVOCATION_BYTES + 1])
                    except RecordError:
                        continue
                    if tomb.digest == path.stem and identity in (None, tomb.identity):
                        found[tomb.digest] = tomb
        return sorted(found.values(), key=lambda t: (t.revoked_at, t.digest))

    @staticmethod
    def _revoked(key: str, record: Record | None, tombs: list[Revocation],
                 trusted: list[PublicKey] | None) -> str | None:
        match = RECORD_KEY.fullmatch(key)
        if record is None or match is None or not tombs:
            return None
        tomb = revoked_by(record, match.group(2), tombs, trusted)
        return describe_revocation(tomb) if tomb is not None else None

    def find_record(self, ref: str) -> Listed:
        """The record ``ref`` names: its store key (``records/<identity>/<sha>.json``),
        ``<identity>/<sha>``, or the record's sha256 (or a unique prefix of 12+ hex digits).
        StoreConfigError when it names none or several."""
        ref = ref.strip().removeprefix(RECORDS).removesuffix(".json")
        if "/" in ref:
            key = f"{RECORDS}{ref}.json"
            if not RECORD_KEY.fullmatch(key):
                raise StoreConfigError(f"{ref[:100]!r} is not a record (records/IDENTITY/"
                                       "SHA256.json, or the record's sha256)")
            keys = [k for k, _ in self.transport.list(key.rsplit("/", 1)[0] + "/") if k == key]
        elif re.fullmatch(r"[0-9a-f]{12,64}", ref):
            keys = [k for k, _ in self.transport.list(RECORDS)
                    if (m := RECORD_KEY.fullmatch(k)) and m.group(2).startswith(ref)]
        else:
            raise StoreConfigError(f"{ref[:100]!r} is not a record name: give its sha256 (12 "
                                   "or more hex digits, as `zoo store list --json` shows) or "
                                   "its key records/IDENTITY/SHA256.json")
        if not keys:
            raise StoreConfigError(f"no record {ref[:100]} in the store {self.url}")
        if len(keys) > 1:
            raise StoreConfigError(f"{ref} names {len(keys)} records; give more digits")
        key, record, error = next(self._read_records(keys))
        if record is None:
            raise StoreRefusedError(f"store {self.url}: {key}: {error}", [str(error)])
        return Listed(key, record, None)

    def revoke(self, ref: str, sign_key: SigningKey, reason: str = "") -> Revocation:
        """Withdraw the record ``ref`` names (see :meth:`find_record`) with a tombstone signed
        by ``sign_key``. Readers honour it when they trust that key or it signed the record."""
        item = self.find_record(ref)
        match = RECORD_KEY.fullmatch(item.key)
        assert match is not None and item.record is not None
        try:
            tomb = make_revocation(match.group(1), match.group(2), reason, sign_key,
                                   self.publisher)
        except RecordError as exc:
            raise StoreConfigError(f"--reason: {exc}") from None
        self.transport.write_new(tomb.key, tomb.to_bytes())
        return tomb

