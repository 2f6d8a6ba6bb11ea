"""The store's index: snapshots of ``records/`` (record files side by side, in parts) and a
journal of publishes since, so a reader lists a big store with a few requests.

Layout (under the store root)::

    index/snapshots/<stamp>-<sha256>.json   a snapshot head: which parts, when, signed
    index/parts/<sha256>.json               up to PART_RECORDS record files, by record key
    index/journal/<stamp>-<identity>-<sha256>  empty: "records/<identity>/<sha256>.json was
                                            published at <stamp>" (written by publishers)

``<stamp>`` is a UTC time, ``20261204T170257123456Z``, so keys sort by time and a reader can
list only the journal entries after a snapshot (S3 ``StartAfter``). Heads and parts are named
by the sha256 of their own bytes. A head's statement (schema ``zoo-store-index/1``) names
every part by sha256 and size and may be signed (Ed25519 over ``b"zoo-store-index/1\\n"`` +
its canonical JSON, as records are), so a signature covers every record byte in the parts.

Nothing here is trusted by being here: this module parses heads and parts strictly and
bounded; the reader (:mod:`zoo.store.indexing`) re-checks every record in a part exactly as
one read from ``records/`` (its bytes hash to its key's name, strict parse, identity,
signature, tombstones).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from zoo._core.jsonio import JSONRefused, json_object
from zoo._core.names import HEX64, SHA256_HEX
from zoo.store.base import RECORD_KEY
from zoo.store.keys import PublicKey, SigningKey
from zoo.store.record import (
    MAX_RECORD_BYTES,
    NONCE,
    PUBLISHER,
    RecordError,
    Signature,
    envelope_bytes,
    now_utc,
    signature_standing,
    signed_statement,
    signing_bytes,
)

SCHEMA = "zoo-store-index/1"
DOMAIN = (SCHEMA + "\n").encode("ascii")
SNAPSHOTS = "index/snapshots/"
PARTS = "index/parts/"
JOURNAL = "index/journal/"
_STAMP = r"\d{8}T\d{12}Z"
SNAPSHOT_KEY = re.compile(rf"index/snapshots/({_STAMP})-({SHA256_HEX})\.json")
PART_KEY = re.compile(rf"index/parts/({SHA256_HEX})\.json")
JOURNAL_KEY = re.compile(rf"index/journal/({_STAMP})-({SHA256_HEX})-({SHA256_HEX})")
MAX_HEAD_BYTES = 1 << 20
MAX_PART_BYTES = 32 << 20
PART_RECORDS = 4096
MAX_PARTS = 4096
MAX_INDEX_BYTES = 1 << 30  # all parts of one snapshot together
SKEW = timedelta(hours=1)  # journal entries this much older than a snapshot are read again
#: a snapshot's time has all six fraction digits: its stamp sorts like time in key names
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_FIELDS = {"schema", "taken_at", "records", "parts", "publisher", "nonce"}


class IndexFormatError(ValueError):
    """A snapshot head or part that is not a valid zoo store index object (says why)."""


def stamp(when: str) -> str:
    """``2026-12-04T17:02:57.123456Z`` -> ``20261204T170257123456Z`` (sorts like time)."""
    return when.replace("-", "").replace(":", "").replace(".", "")


def stamp_before(when: str, delta: timedelta = SKEW) -> str:
    """The stamp of ``when`` (a ``taken_at``) minus ``delta``."""
    moment = datetime.strptime(when, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return stamp((moment - delta).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def journal_key(record_key: str, when: str | None = None) -> str:
    """The journal entry for ``records/<identity>/<sha256>.json`` published ``when`` (now)."""
    match = RECORD_KEY.fullmatch(record_key)
    if match is None:
        raise ValueError(f"{record_key!r} is not a record key")
    return f"{JOURNAL}{stamp(when or now_utc())}-{match.group(1)}-{match.group(2)}"


def journal_record(key: str) -> tuple[str, str] | None:
    """(stamp, record key) a journal entry names, or None for a key that is not one."""
    match = JOURNAL_KEY.fullmatch(key)
    if match is None:
        return None
    return match.group(1), f"records/{match.group(2)}/{match.group(3)}.json"


@dataclass(frozen=True)
class PartRef:
    """One part of a snapshot: its sha256, size and how many records it holds."""

    sha256: str
    size: int
    records: int

    @property
    def key(self) -> str:
        return f"{PARTS}{self.sha256}.json"

    def as_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "records": self.records}


@dataclass(frozen=True)
class Snapshot:
    """A snapshot head: ``records`` record files in ``parts``, as ``records/`` held them when
    the listing began (``taken_at``)."""

    taken_at: str
    records: int
    parts: tuple[PartRef, ...]
    publisher: str
    nonce: str
    signature: Signature | None

    def statement(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "taken_at": self.taken_at, "records": self.records,
                "parts": [p.as_dict() for p in self.parts], "publisher": self.publisher,
                "nonce": self.nonce}

    def canonical(self) -> bytes:
        """The bytes a signature covers: domain tag + canonical JSON."""
        return signing_bytes(DOMAIN, self.statement())

    def to_bytes(self) -> bytes:
        return envelope_bytes(self.statement(), self.signature)

    @property
    def key(self) -> str:
        """Where it lives in a store."""
        digest = hashlib.sha256(self.to_bytes()).hexdigest()
        return f"{SNAPSHOTS}{stamp(self.taken_at)}-{digest}.json"

    def signature_status(self, trusted: list[PublicKey] | None) -> str:
        """``invalid``, ``unsigned``, ``trusted``, ``untrusted`` or ``valid`` (as records)."""
        return signature_standing(self.signature, self.canonical(), trusted)


def pack_parts(blobs: dict[str, bytes]) -> list[tuple[PartRef, bytes]]:
    """Record files (record key -> bytes, ASCII as zoo writes them) in parts of at most
    PART_RECORDS records and MAX_PART_BYTES bytes, in key order."""
    parts: list[tuple[PartRef, bytes]] = []
    batch: dict[str, str] = {}
    size = 0

    def close() -> None:
        nonlocal batch, size
        if batch:
            body = json.dumps({"zoo_index_part": 1, "records": batch}, sort_keys=True,
                              separators=(",", ":"), ensure_ascii=True).encode("ascii")
            parts.append((PartRef(hashlib.sha256(body).hexdigest(), len(body), len(batch)),
                          body))
        batch, size = {}, 0

    for key, blob in sorted(blobs.items()):
        text = blob.decode("ascii")
        cost = len(json.dumps(text)) + len(key) + 8
        if len(batch) >= PART_RECORDS or size + cost > MAX_PART_BYTES - 64:
            close()
        batch[key] = text
        size += cost
    close()
    return parts


def make_snapshot(taken_at: str, parts: list[PartRef], sign_key: SigningKey | None,
                  publisher: str) -> Snapshot:
    """A new snapshot head, signed when ``sign_key`` is given."""
    unsigned = Snapshot(taken_at, sum(p.records for p in parts), tuple(parts),
                        publisher[:100], secrets.token_hex(8), None)
    if sign_key is None:
        return unsigned
    sig = Signature(sign_key.public, sign_key.sign(unsigned.canonical()))
    return Snapshot(**{**unsigned.__dict__, "signature": sig})


def parse_snapshot(blob: bytes) -> Snapshot:
    """Validate a snapshot head's bytes (IndexFormatError naming the first problem)."""
    try:
        st, signature = signed_statement(blob, MAX_HEAD_BYTES, "index snapshot", SCHEMA,
                                         _FIELDS)
    except RecordError as exc:
        raise IndexFormatError(str(exc)) from None
    taken, publisher, nonce = st["taken_at"], st["publisher"], st["nonce"]
    if not (isinstance(taken, str) and _TIME.fullmatch(taken) and isinstance(publisher, str)
            and PUBLISHER.fullmatch(publisher) and isinstance(nonce, str)
            and NONCE.fullmatch(nonce)):
        raise IndexFormatError("taken_at, publisher or nonce has a value that is not allowed")
    raw_parts = st["parts"]
    if not isinstance(raw_parts, list) or len(raw_parts) > MAX_PARTS:
        raise IndexFormatError(f"parts must be a list of at most {MAX_PARTS}")
    parts = []
    for item in raw_parts:
        if not isinstance(item, dict) or set(item) != {"sha256", "size", "records"}:
            raise IndexFormatError("each part is {'sha256', 'size', 'records'}")
        sha, size, count = item["sha256"], item["size"], item["records"]
        if not (isinstance(sha, str) and HEX64.fullmatch(sha) and _whole(size)
                and 0 < size <= MAX_PART_BYTES and _whole(count)
                and 0 < count <= PART_RECORDS):
            raise IndexFormatError("a part's sha256, size or record count is not allowed")
        parts.append(PartRef(sha, size, count))
    if sum(p.size for p in parts) > MAX_INDEX_BYTES:
        raise IndexFormatError(f"its parts add up to more than {MAX_INDEX_BYTES} bytes")
    if len({p.sha256 for p in parts}) != len(parts):
        raise IndexFormatError("a part is named twice")
    if not _whole(st["records"]) or st["records"] != sum(p.records for p in parts):
        raise IndexFormatError("records differs from the parts' total")
    return Snapshot(taken, st["records"], tuple(parts), publisher, nonce, signature)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def unpack_part(blob: bytes, expected: int) -> dict[str, bytes]:
    """Record key -> record file bytes from a part whose bytes were already checked against
    its head. IndexFormatError for a malformed part; entries are not yet checked against their
    keys (the reader does that, as for any record)."""
    try:
        data = json_object(blob, MAX_PART_BYTES, "index part")
    except JSONRefused as exc:
        raise IndexFormatError(str(exc)) from None
    records = data.get("records")
    if set(data) != {"zoo_index_part", "records"} or data["zoo_index_part"] != 1 or \
            not isinstance(records, dict):
        raise IndexFormatError("not a zoo index part ({'zoo_index_part': 1, 'records': {...}})")
    if len(records) != expected:
        raise IndexFormatError(f"it holds {len(records)} records, its snapshot says {expected}")
    out: dict[str, bytes] = {}
    for key, text in records.items():
        if not (isinstance(key, str) and RECORD_KEY.fullmatch(key) and isinstance(text, str)
                and len(text) <= MAX_RECORD_BYTES):
            raise IndexFormatError(f"entry {str(key)[:100]!r} is not a record key and its file")
        try:
            out[key] = text.encode("ascii")
        except UnicodeEncodeError:
            raise IndexFormatError(f"entry {key}: a record file is ASCII") from None
    return out
