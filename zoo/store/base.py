"""The team store's common ground: layout names, result types, and the record/manifest
consistency rule a publish and a pull share."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo._core.names import SHA256_HEX
from zoo.store.export_folder import (
    ManifestFacts,
    manifest_problems,
    parse_manifest,
    sums_text,
)
from zoo.store.record import (
    HEX64,
    SUMS_NAME,
    Record,
    RecordError,
    Statement,
)
from zoo.store.revocation import KEY as REVOCATION_KEY
from zoo.store.revocation import (
    Revocation,
    parse_revocation,
)
from zoo.store.transport import Transport

#: progress(what, bytes done, bytes total)
Progress = Callable[[str, int, int], None]
OBJECTS = "objects/sha256/"
RECORDS = "records/"
RECORD_KEY = re.compile(rf"records/({SHA256_HEX})/({SHA256_HEX})\.json")
OBJECT_KEY = re.compile(rf"objects/sha256/({SHA256_HEX})")
WEIGHTS = "weights/sha256/"
WEIGHTS_KEY = re.compile(rf"weights/sha256/({SHA256_HEX})")
PAGE = 256


def _no_progress(_what: str, _done: int, _total: int) -> None:
    return None


@dataclass(frozen=True)
class PublishResult:
    """What a publish did."""

    store: str
    identity: str
    identity_source: str
    record_key: str
    record: Record
    uploaded: list[str]  # object paths (in the export folder) that were sent
    present: list[str]  # object paths the store already had
    bytes_uploaded: int
    already: bool = False  # an identical record (same objects, same signer) existed
    weights_sha256: str | None = None  # the weights the manifest says the artifact came from

    @property
    def signer(self) -> str | None:
        return self.record.signature.public_key.short if self.record.signature else None

    def as_dict(self) -> dict[str, Any]:
        st = self.record.statement
        return {"store": self.store, "identity": self.identity,
                "identity_source": self.identity_source, "record": self.record_key,
                "model": st.model, "format": st.format, "precision": st.precision,
                "artifact": st.artifact, "size": st.size, "untrained": st.untrained,
                "signed_by": self.record.signature.public_key.fingerprint
                if self.record.signature else None,
                "objects": len(st.objects), "uploaded": self.uploaded, "present": self.present,
                "bytes_uploaded": self.bytes_uploaded, "already_published": self.already,
                "published_at": st.published_at}


@dataclass(frozen=True)
class PullResult:
    """A verified artifact installed from the store."""

    store: str
    record_key: str
    record: Record
    signature: str  # 'trusted', 'valid' (no keys to check against) or 'unsigned'
    files: list[Path]  # top-level paths installed into the destination
    bytes_downloaded: int
    skipped: list[str] = field(default_factory=list)  # records refused before this one

    @property
    def signer(self) -> str | None:
        return self.record.signature.public_key.short if self.record.signature else None


@dataclass
class Listed:
    """One record found by :meth:`Store.records`: parsed, or the reason it is not."""

    key: str
    record: Record | None
    error: str | None
    signature: str | None = None
    revoked: str | None = None  # "revoked <when> by <key>: <reason>" when a tombstone applies

    @property
    def identity(self) -> str:
        match = RECORD_KEY.fullmatch(self.key)
        return match.group(1) if match else ""


@dataclass
class VerifyReport:
    """What ``zoo store verify`` found (nothing is deleted or changed)."""

    store: str
    records: list[dict[str, Any]] = field(default_factory=list)
    objects_checked: int = 0
    bytes_hashed: int = 0
    unreferenced: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # tmp/ files of killed publishes
    weights: list[dict[str, Any]] = field(default_factory=list)  # {"key", "problem"}
    index: list[dict[str, str]] = field(default_factory=list)  # {"key", "problem"}

    @property
    def ok(self) -> bool:
        return (all(not r["problems"] for r in self.records) and not self.stray
                and not any(w["problem"] for w in self.weights) and not self.index)

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "ok": self.ok, "records": self.records,
                "objects_checked": self.objects_checked, "bytes_hashed": self.bytes_hashed,
                "unreferenced_objects": self.unreferenced, "stray": self.stray,
                "leftovers": self.leftovers, "weights": self.weights, "index": self.index}


def _counter(progress: Progress | None, what: str, total: int) -> Callable[[int], None]:
    """A transport callback (bytes just moved) that reports ``what``'s running total."""
    say = progress or _no_progress
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        say(what, done, total)

    return step


def _weights_sha256(manifest: dict[str, Any]) -> str | None:
    """``weights.sha256`` of a manifest, when it is a full sha256 (untrained: none)."""
    weights = manifest.get("weights")
    sha = weights.get("sha256") if isinstance(weights, dict) else None
    return sha if isinstance(sha, str) and HEX64.fullmatch(sha) else None


def _tombstone(key: str, blob: bytes | Exception) -> Revocation | None:
    """A tombstone read from ``key``, or None (missing, misnamed, altered, malformed)."""
    match = REVOCATION_KEY.fullmatch(key)
    if isinstance(blob, Exception) or match is None:
        return None
    if hashlib.sha256(blob).hexdigest() != match.group(2):
        return None
    try:
        tomb = parse_revocation(blob)
    except RecordError:
        return None
    return tomb if tomb.identity == match.group(1) else None


class _Refused(Exception):
    """One record failed verification during a pull (the next one may pass)."""


class StoreBase:
    """A store at one URL (the parts below add publish, pull, audit, weights)."""

    def __init__(self, transport: Transport, *, publisher: str | None = None,
                 record_cache: Path | None = None) -> None:
        from zoo import __version__

        self.transport = transport
        self.publisher = publisher or f"zoo {__version__}"
        self.record_cache = record_cache

    @property
    def url(self) -> str:
        return self.transport.url

    @staticmethod
    def _consistency(st: Statement, manifest: bytes, sums: bytes | None) -> list[str]:
        try:
            facts: ManifestFacts = parse_manifest(manifest)
        except ValueError as exc:
            return [f"{st.manifest} is not a valid zoo manifest: {exc}"]
        problems = manifest_problems(st, facts)
        if sums is not None and sums != sums_text(st.objects):
            problems.append(f"{SUMS_NAME} differs from the record's objects")
        return problems
