"""Reading records and tombstones from a store: parsed, checked against their names,
remembered locally; finding and revoking a record.

A store of thousands of records is listed without one request per record: records already
read are remembered under ``ZOO_HOME/store/records`` (by sha256, re-proved on every read), and
a reader that had to fetch many records one by one leaves them in a *pack*
(``packs/records/<sha256>.json``: record files side by side, named by the pack's own sha256;
written best-effort, quietly skipped on a read-only store). Nothing in a pack is trusted: a
record is taken from one only for a key the ``records/`` listing shows, and only when its
bytes hash to the name in that key; then it gets every check a record read on its own gets
(parse, identity, signature, tombstones). A pack can hold records back, never add or alter
one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zoo._core.jsonio import JSONRefused, json_object
from zoo._core.names import SHA256_HEX
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

PACKS = "packs/records/"
PACK_KEY = re.compile(rf"packs/records/({SHA256_HEX})\.json")
PACK_MIN = 256  # records fetched one by one before a reader leaves a pack
PACK_MAX_RECORDS = 4096
MAX_PACK_BYTES = 32 << 20
MAX_PACKS = 64  # packs read per listing (a store with more is read record by record)
PACKS_BUDGET = 256 << 20  # bytes of packs one listing holds at most
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

    def _read_records(self, keys: list[str], *, packs: bool = False
                      ) -> Iterator[tuple[str, Record | None, str | None]]:
        """(key, record, error) for each record key: from the local record cache, from the
        store's packs (``packs``: for listings of the whole store), else read concurrently,
        CHUNK at a time."""
        digests = {k: m.group(2) for k in keys if (m := RECORD_KEY.fullmatch(k))}
        with ThreadPoolExecutor(8) as pool:
            cached = dict(zip(keys, pool.map(lambda k: self._cached(digests[k]) if k in digests
                                             else None, keys), strict=True))
        missing = [k for k in keys if cached[k] is None]
        packed: dict[str, bytes] = self._pack_blobs() if packs and len(missing) >= PACK_MIN \
            else {}
        fetched: dict[str, bytes] = {}  # read from the store's records/ one by one
        for i in range(0, len(keys), CHUNK):
            chunk = keys[i:i + CHUNK]
            blobs: dict[str, bytes | Exception] = {}
            todo = []
            for key in chunk:
                blob = cached[key]
                if blob is None and key in digests and (copy := packed.get(digests[key])) \
                        and hashlib.sha256(copy).hexdigest() == digests[key]:
                    blob = copy  # a pack's copy, when its bytes are the ones the key names
                if blob is not None:
                    blobs[key] = blob
                else:
                    todo.append(key)
            got = self.transport.read_many(todo, MAX_RECORD_BYTES)
            blobs.update(got)
            parsed = [(key, *self._parse(key, blobs[key], remember=False)) for key in chunk]
            new: dict[str, bytes] = {}  # checked, and not yet in the local record cache
            for key, record, _error in parsed:
                body = blobs[key]
                if record is not None and cached[key] is None and isinstance(body, bytes):
                    new[digests[key]] = body
                    if key in got:
                        fetched[digests[key]] = body
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda item: self._remember(*item), new.items()))
            yield from parsed
        if packs and len(fetched) >= PACK_MIN:
            self._write_packs(fetched)

    def _pack_blobs(self) -> dict[str, bytes]:
        """Record files from the store's packs, by the sha256 each pack names them with (not
        yet checked: :meth:`_parse` hashes each against its record key). Packs that are
        unreadable, oversize, misnamed or malformed are skipped."""
        try:
            keys = [k for k, size in self.transport.list(PACKS)
                    if PACK_KEY.fullmatch(k) and 0 < size <= MAX_PACK_BYTES][:MAX_PACKS]
        except Exception:  # a store without packs, or one that refuses the listing
            return {}
        found: dict[str, bytes] = {}
        budget = PACKS_BUDGET
        for key in keys:  # one at a time: memory stays within one pack and the budget
            blob = self.transport.read_many([key], MAX_PACK_BYTES).get(key)
            match = PACK_KEY.fullmatch(key)
            if isinstance(blob, bytes):
                budget -= len(blob)
            if budget < 0:
                break
            if not isinstance(blob, bytes) or match is None or len(blob) > MAX_PACK_BYTES or \
                    hashlib.sha256(blob).hexdigest() != match.group(1):
                continue
            found.update(_unpack(blob))
        return found

    def _write_packs(self, blobs: dict[str, bytes]) -> None:
        """Leave ``blobs`` (checked record files) in the store as packs, best-effort."""
        items = sorted(blobs.items())
        for i in range(0, len(items), PACK_MAX_RECORDS):
            body = json.dumps({"zoo_record_pack": 1, "records": {
                digest: blob.decode("latin-1") for digest, blob in items[i:i + PACK_MAX_RECORDS]
            }}, sort_keys=True, separators=(",", ":")).encode("ascii")
            if len(body) > MAX_PACK_BYTES:
                continue
            with contextlib.suppress(Exception):  # read-only credentials: no pack, no harm
                self.transport.write_new(f"{PACKS}{hashlib.sha256(body).hexdigest()}.json",
                                         body)

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

    def records(self, pattern: str | None = None,
                trusted: list[PublicKey] | None = None) -> Iterator[Listed]:
        """Every record in the store, in key order, read a page (256 records) at a time;
        those whose model name does not match the glob ``pattern`` are left out. A record
        that cannot be read or parsed is yielded with ``error`` set."""
        import fnmatch

        self.transport.check_root()  # a missing or unreachable store is an error, not empty
        keys = [k for k, _size in self.transport.list(RECORDS)]
        tombs = self.tombstones()
        for key, record, error in self._read_records(keys, packs=True):
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


def _unpack(blob: bytes) -> dict[str, bytes]:
    """digest -> record file bytes from a pack (hostile: anything malformed is dropped)."""
    try:
        data = json_object(blob, MAX_PACK_BYTES, "record pack")
    except JSONRefused:
        return {}
    records = data.get("records")
    if not isinstance(records, dict) or len(records) > PACK_MAX_RECORDS:
        return {}
    out = {}
    for digest, text in records.items():
        if isinstance(digest, str) and HEX64.fullmatch(digest) and isinstance(text, str) and \
                len(text) <= MAX_RECORD_BYTES:
            with contextlib.suppress(UnicodeEncodeError):
                out[digest] = text.encode("latin-1")
    return out
