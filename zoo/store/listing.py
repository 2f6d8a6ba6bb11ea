"""Reading records and tombstones from a store: parsed, checked against their names,
remembered locally; finding and revoking a record."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

from zoo.store.base import (
    PAGE,
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
    signature_status,
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
        if self.record_cache is None:
            return
        with contextlib.suppress(OSError):
            from zoo._core.fs import atomic_write_bytes

            atomic_write_bytes(self.record_cache / f"{digest}.json", blob)

    def _read_records(self, keys: list[str]) -> Iterator[tuple[str, Record | None, str | None]]:
        """(key, record, error) for each record key, reading PAGE at a time."""
        for i in range(0, len(keys), PAGE):
            page = keys[i:i + PAGE]
            blobs: dict[str, bytes | Exception] = {}
            todo = []
            for key in page:
                match = RECORD_KEY.fullmatch(key)
                cached = self._cached(match.group(2)) if match else None
                if cached is not None:
                    blobs[key] = cached
                else:
                    todo.append(key)
            blobs.update(self.transport.read_many(todo, MAX_RECORD_BYTES))
            for key in page:
                yield (key, *self._parse(key, blobs[key]))

    def _parse(self, key: str, blob: bytes | Exception) -> tuple[Record | None, str | None]:
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
        self._remember(match.group(2), blob)
        return record, None

    def records(self, pattern: str | None = None,
                trusted: list[PublicKey] | None = None) -> Iterator[Listed]:
        """Every record in the store, in key order, read a page (256 records) at a time;
        those whose model name does not match the glob ``pattern`` are left out. A record
        that cannot be read or parsed is yielded with ``error`` set."""
        import fnmatch

        self.transport.check_root()  # a missing or unreachable store is an error, not empty
        keys = [k for k, _size in self.transport.list(RECORDS)]
        tombs = self.tombstones()
        for key, record, error in self._read_records(keys):
            if record is not None and pattern and not fnmatch.fnmatchcase(
                    record.statement.model, pattern):
                continue
            status = signature_status(record, trusted) if record is not None else None
            yield Listed(key, record, error, status, self._revoked(key, record, tombs, trusted))

    def lookup(self, identity: str, trusted: list[PublicKey] | None = None) -> list[Listed]:
        """The records for one export identity (parsed or with the reason they are not),
        each marked ``revoked`` when a tombstone signed by one of ``trusted`` or by the
        record's own signer withdraws it."""
        if not HEX64.fullmatch(identity):
            raise StoreConfigError(f"{identity[:80]!r} is not an export identity (64 hex)")
        keys = [k for k, _ in self.transport.list(f"{RECORDS}{identity}/")]
        found = list(self._read_records(keys))
        tombs = self.tombstones(identity) if found else []
        return [Listed(k, r, e, None, self._revoked(k, r, tombs, trusted))
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
