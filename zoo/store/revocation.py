"""Revocation: a signed tombstone that withdraws one published record for good.

Deleting a record from a store is not enough: anyone who may write to the store can put the
deleted file back, and its signature still verifies. A team withdraws a record instead with
``zoo store revoke RECORD --sign KEY``, which writes a small signed file::

    revocations/<identity>/<sha256 of the file>.json
    {"statement": {"schema": "zoo-store-revocation/1", "identity", "record", "reason",
                   "revoked_at", "publisher", "nonce"},
     "signature": {...}}            # Ed25519, as for records, over the domain-tagged statement

A reader treats record ``R`` as revoked when a tombstone naming ``R``'s sha256 carries a valid
signature by one of the reader's trusted keys or by the key that signed ``R`` itself (only its
holder could make that). Unsigned tombstones and tombstones by other keys change nothing.
Readers keep every tombstone they have seen under ``ZOO_HOME/store/revocations``, so deleting
a tombstone from the store does not un-revoke a record for a machine that saw it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from zoo._core.names import HEX64, SHA256_HEX
from zoo.store.keys import PublicKey, SigningKey
from zoo.store.record import (
    NONCE,
    TIME,
    Record,
    RecordError,
    Signature,
    envelope_bytes,
    now_utc,
    signed_statement,
    signing_bytes,
)

SCHEMA = "zoo-store-revocation/1"
DOMAIN = (SCHEMA + "\n").encode("ascii")
PREFIX = "revocations/"
MAX_BYTES = 64 << 10
MAX_REASON = 500
KEY = re.compile(rf"revocations/({SHA256_HEX})/({SHA256_HEX})\.json")
_PRINTABLE = re.compile(r"[\x20-\x7e]{0,500}")
_FIELDS = {"schema", "identity", "record", "reason", "revoked_at", "publisher", "nonce"}


@dataclass(frozen=True)
class Revocation:
    """One tombstone: which record of which identity is withdrawn, why, and who says so."""

    identity: str
    record: str  # sha256 of the withdrawn record file
    reason: str
    revoked_at: str
    publisher: str
    nonce: str
    signature: Signature | None

    def statement(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "identity": self.identity, "record": self.record,
                "reason": self.reason, "revoked_at": self.revoked_at,
                "publisher": self.publisher, "nonce": self.nonce}

    def canonical(self) -> bytes:
        return signing_bytes(DOMAIN, self.statement())

    def to_bytes(self) -> bytes:
        return envelope_bytes(self.statement(), self.signature)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def key(self) -> str:
        """Where it lives in a store."""
        return f"{PREFIX}{self.identity}/{self.digest}.json"

    def valid_signer(self) -> str | None:
        """The fingerprint of the key whose signature verifies, or None (unsigned/invalid)."""
        sig = self.signature
        if sig is None or not sig.public_key.verify(sig.value, self.canonical()):
            return None
        return sig.public_key.fingerprint


def make_revocation(identity: str, record: str, reason: str, sign_key: SigningKey,
                    publisher: str) -> Revocation:
    """A new tombstone for record ``record`` (its sha256) of ``identity``, signed."""
    reason = " ".join(reason.split())
    if not _PRINTABLE.fullmatch(reason):
        raise RecordError(f"a revocation reason is printable ASCII, at most {MAX_REASON} "
                          "characters")
    for value, what in ((identity, "identity"), (record, "record")):
        if not HEX64.fullmatch(value):
            raise RecordError(f"{what} {value[:80]!r} is not a sha256 (64 hex)")
    unsigned = Revocation(identity, record, reason, now_utc(), publisher[:100],
                          secrets.token_hex(8), None)
    sig = Signature(sign_key.public, sign_key.sign(unsigned.canonical()))
    return Revocation(**{**unsigned.__dict__, "signature": sig})


def parse_revocation(blob: bytes) -> Revocation:
    """Validate a tombstone file's bytes (RecordError naming the first problem)."""
    st, signature = signed_statement(blob, MAX_BYTES, "revocation", SCHEMA, _FIELDS)
    if not all(isinstance(st[k], str) for k in _FIELDS):
        raise RecordError("revocation fields are text")
    if not (HEX64.fullmatch(st["identity"]) and HEX64.fullmatch(st["record"])
            and TIME.fullmatch(st["revoked_at"]) and _PRINTABLE.fullmatch(st["reason"])
            and _PRINTABLE.fullmatch(st["publisher"]) and NONCE.fullmatch(st["nonce"])):
        raise RecordError("a revocation field has a value that is not allowed")
    return Revocation(st["identity"], st["record"], st["reason"], st["revoked_at"],
                      st["publisher"], st["nonce"], signature)


def revoked_by(record: Record, digest: str, tombstones: list[Revocation],
               trusted: list[PublicKey] | None) -> Revocation | None:
    """The tombstone that withdraws ``record`` (whose file hashes to ``digest``), if any: it
    names the record and is signed by a trusted key or by the record's own signer."""
    allowed = {k.fingerprint for k in trusted or []}
    if record.signature is not None:
        allowed.add(record.signature.public_key.fingerprint)
    for tomb in tombstones:
        if tomb.record == digest and tomb.identity == record.statement.identity:
            signer = tomb.valid_signer()
            if signer is not None and signer in allowed:
                return tomb
    return None


def describe(tomb: Revocation) -> str:
    """'revoked 2026-12-04T… by ab12…: reason' (for listings and refusals)."""
    signer = tomb.signature.public_key.short if tomb.signature else "nobody"
    why = f": {tomb.reason}" if tomb.reason else ""
    return f"revoked {tomb.revoked_at[:19]}Z by {signer}{why}"
