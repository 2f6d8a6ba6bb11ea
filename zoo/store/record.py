"""Store records: one small, immutable JSON file per published artifact.

A record is ``{"statement": {...}, "signature": {...} | null}``. The *statement* names the
export identity, what the artifact is (model, format, precision, size), and every object it
consists of (path inside the export folder, sha256, size), including the sidecar manifest
and its hash. The *signature* is Ed25519 over the statement's canonical bytes::

    b"zoo-store-record/1\\n" + json.dumps(statement, sort_keys=True, separators=(",", ":"),
                                          ensure_ascii=True).encode()

The record is stored as ``records/<identity>/<sha256 of the record file>.json``: its name
proves its bytes, no record is ever rewritten, and two publishers never write the same name.
Everything read back is hostile until checked: :func:`parse_record` validates every field
(paths are relative, inside the artifact's own names; hashes are 64 hex; sizes bounded).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from zoo._core.jsonio import JSONRefused, json_object
from zoo._core.names import HEX64, SIDECAR_SUFFIX
from zoo.store.keys import SCHEME, PublicKey, SigningKey

SCHEMA = "zoo-store-record/1"
DOMAIN = (SCHEMA + "\n").encode("ascii")
MAX_RECORD_BYTES = 1 << 20
MAX_OBJECTS = 50_000
MAX_OBJECT_SIZE = 1 << 44  # 16 TiB: larger claims are nonsense
SUMS_NAME = "SHA256SUMS"
_WORD = re.compile(r"[A-Za-z0-9_.+-]{1,100}")
_BARE = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
PUBLISHER = re.compile(r"[\x20-\x7e]{1,100}")
NONCE = re.compile(r"[0-9a-f]{16}")  # every signed statement's nonce
IdentitySource = Literal["manifest", "fallback"]


class RecordError(ValueError):
    """A record that is not a valid zoo store record (the message says which field)."""


@dataclass(frozen=True)
class ObjectRef:
    """One file of a published artifact: its path in the export folder and its content."""

    path: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Statement:
    """What a record asserts (and what a signature covers)."""

    identity: str
    identity_source: IdentitySource
    model: str
    format: str
    precision: str
    untrained: bool
    artifact: str
    manifest: str
    manifest_sha256: str
    size: int
    objects: tuple[ObjectRef, ...]
    published_at: str
    publisher: str
    nonce: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "identity": self.identity,
            "identity_source": self.identity_source, "model": self.model,
            "format": self.format, "precision": self.precision, "untrained": self.untrained,
            "artifact": self.artifact, "manifest": self.manifest,
            "manifest_sha256": self.manifest_sha256, "size": self.size,
            "objects": [o.as_dict() for o in self.objects],
            "published_at": self.published_at, "publisher": self.publisher, "nonce": self.nonce,
        }

    def canonical(self) -> bytes:
        """The bytes a signature covers: domain tag + canonical JSON."""
        return signing_bytes(DOMAIN, self.as_dict())

    @property
    def total_size(self) -> int:
        return sum(o.size for o in self.objects)


def signing_bytes(domain: bytes, statement: dict[str, Any]) -> bytes:
    """What a signature over ``statement`` covers, for every signed store object (records,
    tombstones, index heads, bench records): ``domain`` (the object's tag) and the
    statement's canonical JSON (sorted keys, no spaces, ASCII, NaN refused)."""
    return domain + json.dumps(statement, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=True, allow_nan=False).encode("ascii")


def envelope_bytes(statement: dict[str, Any], signature: Signature | None) -> bytes:
    """A signed store object's file: ``{"statement", "signature"}`` as sorted, indented
    ASCII JSON with a final newline (stable bytes for the same object)."""
    data = {"statement": statement, "signature": signature.as_dict() if signature else None}
    return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False)
            + "\n").encode("ascii")


@dataclass(frozen=True)
class Signature:
    """An Ed25519 signature and the public key that made it (the key is not trusted by
    being here: a reader compares its fingerprint with the keys it trusts)."""

    public_key: PublicKey
    value: bytes

    def as_dict(self) -> dict[str, Any]:
        return {"scheme": SCHEME, "key": self.public_key.fingerprint,
                "public_key": self.public_key.b64(),
                "value": base64.b64encode(self.value).decode("ascii")}


@dataclass(frozen=True)
class Record:
    statement: Statement
    signature: Signature | None

    def to_bytes(self) -> bytes:
        """The record file's bytes (stable for the same record)."""
        return envelope_bytes(self.statement.as_dict(), self.signature)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


SignatureStatus = Literal["trusted", "valid", "untrusted", "unsigned", "invalid"]


def signature_status(record: Record, trusted: list[PublicKey] | None) -> SignatureStatus:
    """:func:`signature_standing` of a record's signature over its statement."""
    return signature_standing(record.signature, record.statement.canonical(), trusted)


def signature_refusal(status: str, sig: Signature | None, keys_given: bool) -> str | None:
    """Why an object whose signature has standing ``status`` may not be used, or None: a
    signature that does not verify never; unsigned or untrusted ones when trusted keys were
    given (records pulled or audited, index snapshots standing for a listing)."""
    if status == "invalid":
        return "its signature does not verify (altered or signed wrongly)"
    if keys_given and status == "unsigned":
        return "unsigned, and a trusted key is required"
    if keys_given and status == "untrusted":
        assert sig is not None
        return f"signed by {sig.public_key.short}, which is not a trusted key"
    return None


def signature_standing(sig: Signature | None, message: bytes,
                       trusted: list[PublicKey] | None) -> SignatureStatus:
    """The one rule for every signed store object (records, index heads, bench records):
    ``invalid`` (does not verify over ``message``), ``unsigned``, or for a good signature:
    ``trusted`` (by one of ``trusted``), ``untrusted`` (keys were given, it is none of them)
    or ``valid`` (no keys given: mathematically sound, signer unknown)."""
    if sig is None:
        return "unsigned"
    if not sig.public_key.verify(sig.value, message):
        return "invalid"
    if not trusted:
        return "valid"
    return "trusted" if sig.public_key.fingerprint in {k.fingerprint for k in trusted} \
        else "untrusted"


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_record(statement_fields: dict[str, Any], objects: list[ObjectRef],
                sign_key: SigningKey | None, publisher: str) -> Record:
    """A new record (time and a random nonce filled in), signed when ``sign_key`` is given."""
    statement = Statement(**statement_fields, objects=tuple(sorted(objects, key=lambda o:
                                                                   o.path)),
                          published_at=now_utc(), publisher=publisher,
                          nonce=secrets.token_hex(8))
    _check_statement(statement)
    signature = None
    if sign_key is not None:
        signature = Signature(sign_key.public, sign_key.sign(statement.canonical()))
    return Record(statement, signature)


def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise RecordError(f"{where}.{key} is missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecordError(f"{where}.{key} has the wrong type")
    return value


def _match(pattern: re.Pattern[str], value: str, field: str) -> str:
    if not pattern.fullmatch(value):
        raise RecordError(f"{field} {value[:80]!r} is not allowed")
    return value


def _size(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= \
            MAX_OBJECT_SIZE:
        raise RecordError(f"{field} must be a size in bytes")
    return value


def check_object_path(path: str, artifact: str) -> None:
    """A record's object path must stay inside the artifact's own names: the artifact itself
    (or a file under the artifact folder), a sidecar ``<artifact>.<suffix>``, or SHA256SUMS."""
    parts = path.split("/")
    if any(not _BARE.fullmatch(p) or p in (".", "..") for p in parts):
        raise RecordError(f"object path {path[:80]!r} is not a safe relative path")
    top = parts[0]
    if len(parts) > 1 and top != artifact:
        raise RecordError(f"object path {path[:80]!r} is outside the artifact {artifact!r}")
    if len(parts) == 1 and path not in (artifact, SUMS_NAME) and \
            not path.startswith(artifact + "."):
        raise RecordError(f"object {path[:80]!r} does not belong to the artifact {artifact!r}")


def _check_statement(st: Statement) -> None:
    _match(HEX64, st.identity, "identity")
    _match(HEX64, st.manifest_sha256, "manifest_sha256")
    for value, field in ((st.model, "model"), (st.format, "format"),
                         (st.precision, "precision")):
        _match(_WORD, value, field)
    _match(_BARE, st.artifact, "artifact")
    if st.artifact in (".", "..", SUMS_NAME):
        raise RecordError(f"artifact {st.artifact!r} is not allowed")
    _match(TIME, st.published_at, "published_at")
    _match(PUBLISHER, st.publisher, "publisher")
    _match(NONCE, st.nonce, "nonce")
    if not st.objects or len(st.objects) > MAX_OBJECTS:
        raise RecordError(f"a record holds 1..{MAX_OBJECTS} objects, not {len(st.objects)}")
    paths = [o.path for o in st.objects]
    if len(set(paths)) != len(paths):
        raise RecordError("an object path is listed twice")
    for obj in st.objects:
        check_object_path(obj.path, st.artifact)
        _match(HEX64, obj.sha256, f"objects[{obj.path!r}].sha256")
        _size(obj.size, f"objects[{obj.path!r}].size")
    as_file = st.artifact in paths
    as_folder = any(p.startswith(st.artifact + "/") for p in paths)
    if as_file == as_folder:
        raise RecordError(f"the artifact {st.artifact!r} must be one file or one folder of "
                          "files")
    manifest = [o for o in st.objects if o.path == st.manifest]
    if st.manifest != st.artifact + SIDECAR_SUFFIX or not manifest:
        raise RecordError(f"the manifest {st.manifest[:80]!r} is not among the objects")
    if manifest[0].sha256 != st.manifest_sha256:
        raise RecordError("manifest_sha256 differs from the manifest object's hash")
    artifact_size = sum(o.size for o in st.objects if o.path == st.artifact or
                        o.path.startswith(st.artifact + "/"))
    if artifact_size != st.size:
        raise RecordError("size differs from the artifact objects' total")


def parse_signature(data: Any) -> Signature | None:
    """A signed object's ``signature`` field: None, or ``{"scheme", "key", "public_key",
    "value"}`` checked for shape (RecordError); whether it verifies is
    :func:`signature_standing`'s question."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise RecordError("signature must be an object or null")
    if _get(data, "scheme", str, "signature") != SCHEME:
        raise RecordError(f"signature.scheme must be {SCHEME!r}")
    try:
        raw = base64.b64decode(_get(data, "public_key", str, "signature"), validate=True)
        value = base64.b64decode(_get(data, "value", str, "signature"), validate=True)
    except (binascii.Error, ValueError):
        raise RecordError("signature fields are not base64") from None
    if len(raw) != 32 or len(value) != 64:
        raise RecordError("signature has the wrong length for Ed25519")
    key = PublicKey(raw, "record")
    if _get(data, "key", str, "signature") != key.fingerprint:
        raise RecordError("signature.key is not the fingerprint of signature.public_key")
    return Signature(key, value)


def signed_statement(blob: bytes, limit: int, what: str, schema: str,
                     fields: set[str]) -> tuple[dict[str, Any], Signature | None]:
    """The envelope every signed store object shares (records, tombstones, index heads):
    strict bounded JSON ``{"statement": {...}, "signature": ... | null}`` whose statement has
    exactly ``fields`` and ``schema``; returns (statement, signature). RecordError names the
    first problem; whether the signature verifies is :func:`signature_standing`'s question."""
    try:
        data = json_object(blob, limit, what)
    except JSONRefused as exc:
        raise RecordError(str(exc)) from None
    if set(data) != {"statement", "signature"}:
        raise RecordError(f"a {what} is {{'statement': ..., 'signature': ...}}")
    st = data["statement"]
    if not isinstance(st, dict):
        raise RecordError("statement must be an object")
    if st.get("schema") != schema:
        raise RecordError(f"statement.schema is not {schema!r} (a newer zoo wrote it?)")
    if set(st) != fields:
        raise RecordError(f"statement fields differ: {sorted(set(st) ^ fields)[:5]}")
    return st, parse_signature(data["signature"])


_RECORD_FIELDS = {"schema", "identity", "identity_source", "model", "format", "precision",
                  "untrained", "artifact", "manifest", "manifest_sha256", "size", "objects",
                  "published_at", "publisher", "nonce"}


def parse_record(blob: bytes) -> Record:
    """Validate and parse a record file's bytes (RecordError with the first problem)."""
    st, signature = signed_statement(blob, MAX_RECORD_BYTES, "record", SCHEMA, _RECORD_FIELDS)
    objects = []
    raw_objects = _get(st, "objects", list, "statement")
    if len(raw_objects) > MAX_OBJECTS:
        raise RecordError(f"more than {MAX_OBJECTS} objects")
    for item in raw_objects:
        if not isinstance(item, dict) or set(item) != {"path", "sha256", "size"}:
            raise RecordError("each object is {'path', 'sha256', 'size'}")
        objects.append(ObjectRef(_get(item, "path", str, "object"),
                                 _get(item, "sha256", str, "object"),
                                 _size(item["size"], "object.size")))
    source = _get(st, "identity_source", str, "statement")
    if source not in ("manifest", "fallback"):
        raise RecordError("statement.identity_source must be 'manifest' or 'fallback'")
    statement = Statement(
        identity=_get(st, "identity", str, "statement"), identity_source=source,
        model=_get(st, "model", str, "statement"), format=_get(st, "format", str, "statement"),
        precision=_get(st, "precision", str, "statement"),
        untrained=_get(st, "untrained", bool, "statement"),
        artifact=_get(st, "artifact", str, "statement"),
        manifest=_get(st, "manifest", str, "statement"),
        manifest_sha256=_get(st, "manifest_sha256", str, "statement"),
        size=_size(st["size"], "statement.size"), objects=tuple(objects),
        published_at=_get(st, "published_at", str, "statement"),
        publisher=_get(st, "publisher", str, "statement"),
        nonce=_get(st, "nonce", str, "statement"),
    )
    _check_statement(statement)
    return Record(statement, signature)
