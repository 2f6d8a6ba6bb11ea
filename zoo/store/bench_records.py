"""Bench records in the team store: ``bench/<model>/<sha256>.json``, signed like store records.

A published bench record (what ``zoo bench NAME --publish`` sends) is one small file::

    {"schema": "zoo-bench-record/1", "bench": {...NAME.bench.json...}, "signature": {...}|null}

The signature is Ed25519 (the keys of :mod:`zoo.store.keys`, the signature format of
:mod:`zoo.store.record`) over ``b"zoo-bench-record/1\\n"`` + the bench record's canonical JSON
(sorted keys, no spaces, ASCII). The file's name is the sha256 of its bytes and nothing in it
depends on the clock (Ed25519 signatures are deterministic), so publishing the same record
with the same key (or unsigned) again writes the same name: a no-op.

Everything read back is hostile: the key must name a model and the bytes' sha256; the bytes
are read bounded and strict (:func:`zoo._core.jsonio.json_object`), the record validated by
:func:`zoo.bench.validate_record`, its model must be the one its key names, and a signature
that does not verify refuses the file. Each refusal is one line saying why.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from zoo._core.jsonio import JSONRefused, json_object
from zoo._core.names import MAX_NAME, MODEL_NAME_CLASS, SHA256_HEX
from zoo.bench.record import RECORD_MAX_BYTES, BenchRecord, BenchRecordError, validate_record
from zoo.store.keys import PublicKey, SigningKey
from zoo.store.record import (
    RecordError,
    Signature,
    parse_signature,
    signature_standing,
    signing_bytes,
)

if TYPE_CHECKING:
    from zoo.store.store import Store

SCHEMA = "zoo-bench-record/1"
DOMAIN = (SCHEMA + "\n").encode("ascii")
PREFIX = "bench/"
KEY = re.compile(rf"bench/({MODEL_NAME_CLASS}{{1,{MAX_NAME}}})/({SHA256_HEX})\.json")
#: a published file: the record (at most RECORD_MAX_BYTES as a file) and its signature
MAX_BYTES = RECORD_MAX_BYTES + (16 << 10)
#: bench files one listing reads at most, and their bytes together
MAX_READ = 4096
READ_BUDGET = 256 << 20
_CHUNK = 64
BenchSignature = Literal["trusted", "valid", "untrusted", "unsigned"]


class BenchObjectError(ValueError):
    """A file under ``bench/`` that is refused (the message says why, in one line)."""


@dataclass(frozen=True)
class PublishedBench:
    """A bench record read from the store and checked: its key, the record, who signed it."""

    key: str
    record: BenchRecord
    signature: Signature | None
    status: BenchSignature

    @property
    def signer(self) -> str | None:
        """``ed25519:<16 hex>`` of the signing key, or None when unsigned."""
        return self.signature.public_key.short if self.signature else None

    @property
    def digest(self) -> str:
        """:func:`record_digest` of the record."""
        return record_digest(self.record)


@dataclass(frozen=True)
class BenchPublishResult:
    """What :func:`publish_bench` did."""

    store: str
    key: str
    size: int
    signer: str | None  # ed25519:<16 hex>, or None
    already: bool  # the store held these very bytes: nothing was written


@dataclass
class BenchListing:
    """The bench records a store holds: the checked ones, and (key, why) for each refused."""

    records: list[PublishedBench] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    other_models: int = 0  # files of models the caller did not ask for (not read)


def canonical(record: BenchRecord) -> bytes:
    """The bytes a signature covers: the domain tag and the record's canonical JSON."""
    return signing_bytes(DOMAIN, dict(record))


def record_digest(record: BenchRecord) -> str:
    """sha256 of the record's canonical form: the same record (from a file, or signed by
    several keys, or none) has one digest."""
    return hashlib.sha256(canonical(record)).hexdigest()


def bench_bytes(record: BenchRecord, sign_key: SigningKey | None = None) -> bytes:
    """The published file's bytes for ``record`` (validated), signed with ``sign_key``."""
    validate_record(record, source=f"bench record of {record.get('model')!r}")
    signature = None
    if sign_key is not None:
        signature = Signature(sign_key.public, sign_key.sign(canonical(record))).as_dict()
    data = {"schema": SCHEMA, "bench": record, "signature": signature}
    return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False)
            + "\n").encode("ascii")


def bench_key(model: str, blob: bytes) -> str:
    """Where the file ``blob`` of ``model``'s record lives in a store."""
    return f"{PREFIX}{model}/{hashlib.sha256(blob).hexdigest()}.json"


def publish_bench(store: Store, record: BenchRecord,
                  sign_key: SigningKey | None = None) -> BenchPublishResult:
    """Write ``record`` to ``store`` as ``bench/<model>/<sha256>.json`` (signed with
    ``sign_key`` when given). A store that already holds those bytes is left alone
    (``already``). Raises BenchRecordError (exit 2) for an invalid record, StoreError for the
    store."""
    blob = bench_bytes(record, sign_key)
    if len(blob) > MAX_BYTES:
        raise BenchRecordError(f"the bench record of {record['model']!r} is larger than a "
                               f"published bench record may be ({MAX_BYTES} bytes); bench "
                               "fewer formats")
    key = bench_key(record["model"], blob)
    signer = sign_key.public.short if sign_key is not None else None
    store.transport.check_root()
    if store.transport.holds(key, blob):
        return BenchPublishResult(store.url, key, len(blob), signer, already=True)
    store.transport.write_new(key, blob)
    return BenchPublishResult(store.url, key, len(blob), signer, already=False)


def _status(signature: Signature | None, record: BenchRecord,
            trusted: list[PublicKey] | None) -> BenchSignature:
    """The signature's standing (the rule of :func:`zoo.store.record.signature_status`);
    BenchObjectError when it does not verify."""
    standing = signature_standing(signature, canonical(record), trusted)
    if standing == "invalid":
        assert signature is not None
        raise BenchObjectError(f"its signature by {signature.public_key.short} does not verify "
                               "(the record was altered or signed wrongly)")
    return standing


def parse_bench(key: str, blob: bytes, trusted: list[PublicKey] | None = None
                ) -> PublishedBench:
    """Check the file ``blob`` read from ``key`` (see the module docstring); BenchObjectError
    saying why it is refused."""
    match = KEY.fullmatch(key)
    if match is None:
        raise BenchObjectError("not a bench record name (bench/<model>/<sha256>.json)")
    if len(blob) > MAX_BYTES:
        raise BenchObjectError(f"larger than {MAX_BYTES} bytes")
    if hashlib.sha256(blob).hexdigest() != match.group(2):
        raise BenchObjectError("its bytes do not match its name (altered after publishing)")
    try:
        data = json_object(blob, MAX_BYTES, "published bench record")
    except JSONRefused as exc:
        raise BenchObjectError(str(exc)) from None
    if set(data) != {"schema", "bench", "signature"}:
        raise BenchObjectError("a published bench record is {'schema', 'bench', 'signature'}")
    if data["schema"] != SCHEMA:
        raise BenchObjectError(f"schema is not {SCHEMA!r} (another zoo version wrote it?)")
    try:
        record = validate_record(data["bench"], source=key)
    except BenchRecordError as exc:
        why = str(exc).partition("is not a zoo bench record: ")[2].rpartition("; produce")[0]
        raise BenchObjectError(f"not a valid bench record: {why or exc}") from None
    if record["model"] != match.group(1):
        raise BenchObjectError(f"filed under model {match.group(1)!r} but measures "
                               f"{record['model']!r}")
    try:
        signature = parse_signature(data["signature"])
    except RecordError as exc:
        raise BenchObjectError(f"bad signature: {exc}") from None
    return PublishedBench(key, record, signature, _status(signature, record, trusted))


def _model_by_model(keys: list[str]) -> list[str]:
    """``keys`` reordered one model at a time, round robin, so a read limit spent early still
    covers every model (in key order one model with thousands of records used it all up)."""
    by_model: dict[str, list[str]] = {}
    for key in keys:
        match = KEY.fullmatch(key)
        by_model.setdefault(match.group(1) if match else "", []).append(key)
    rounds = itertools.zip_longest(*(by_model[m] for m in sorted(by_model)))
    return [key for keys_of_round in rounds for key in keys_of_round if key is not None]


def list_bench(store: Store, models: Iterable[str] | None = None,
               trusted: list[PublicKey] | None = None) -> BenchListing:
    """Every bench record ``store`` holds for ``models`` (None: all), checked; refused files
    are listed with the reason. At most :data:`MAX_READ` files and :data:`READ_BUDGET` bytes
    are read, taken model by model in turn (within a model, in key order: the records' hashes,
    not their dates). Raises StoreError when the store cannot be listed."""
    wanted = None if models is None else set(models)
    listing = BenchListing()
    store.transport.check_root()
    todo: list[str] = []
    for key, size in store.transport.list(PREFIX):
        match = KEY.fullmatch(key)
        if match is None:
            listing.refused.append((key, "not a bench record name "
                                         "(bench/<model>/<sha256>.json)"))
        elif wanted is not None and match.group(1) not in wanted:
            listing.other_models += 1
        elif size > MAX_BYTES:
            listing.refused.append((key, f"{size} bytes is larger than any bench record"))
        else:
            todo.append(key)
    for key, why in store.transport.refused.items():  # file:// links, FIFOs, devices
        if key.startswith(PREFIX) and key not in todo:
            listing.refused.append((key, why))
    todo = _model_by_model(todo)
    budget = READ_BUDGET
    for start in range(0, len(todo), _CHUNK):
        chunk = todo[start:start + _CHUNK]
        if start >= MAX_READ or budget <= 0:
            listing.refused += [(k, "not read: this listing's limit of bench records is "
                                    "spent") for k in chunk]
            continue
        for key, blob in sorted(store.transport.read_many(chunk, MAX_BYTES).items()):
            if isinstance(blob, Exception):
                why = "disappeared while listing" if isinstance(blob, FileNotFoundError) \
                    else f"unreadable: {blob}"
                listing.refused.append((key, why))
                continue
            budget -= len(blob)
            try:
                listing.records.append(parse_bench(key, blob, trusted))
            except BenchObjectError as exc:
                listing.refused.append((key, str(exc)))
    listing.refused.sort()
    listing.records.sort(key=lambda p: (p.record["created"], p.key))
    return listing
