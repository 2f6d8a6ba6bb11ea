"""The team store: publish, pull, list and audit artifacts at an fsspec URL.

Layout under the store URL (nothing else is read; nothing is ever rewritten)::

    objects/sha256/<hex>                 every file, named by its sha256 (content-addressed)
    records/<identity>/<hex>.json        one record per publish, named by its own sha256
    weights/sha256/<hex>                 model weights, named by their sha256: a mirror of
                                         the cards' weights URLs, checked like any mirror
    tmp/                                 file:// stores only: half-written files before rename

A publish uploads the objects the store lacks, then writes the record, last: a reader lists
``records/<identity>/`` and so never sees an artifact whose objects are not all there; a
killed publish leaves only objects, which no record names (``zoo store verify`` lists them as
unreferenced). Records are immutable and uniquely named, so concurrent publishers never lose
each other's work; there is no index to overwrite.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.store.errors import StoreConfigError, StoreError, StoreRefusedError
from zoo.store.keys import PublicKey, SigningKey
from zoo.store.local import (
    ManifestFacts,
    collect,
    manifest_problems,
    parse_manifest,
    sums_text,
)
from zoo.store.record import (
    HEX64,
    MAX_RECORD_BYTES,
    SUMS_NAME,
    Record,
    RecordError,
    SignatureStatus,
    Statement,
    make_record,
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
from zoo.store.transport import SizeMismatch, Transport, open_filesystem

#: progress(what, bytes done, bytes total)
Progress = Callable[[str, int, int], None]
OBJECTS = "objects/sha256/"
RECORDS = "records/"
RECORD_KEY = re.compile(r"records/([0-9a-f]{64})/([0-9a-f]{64})\.json")
OBJECT_KEY = re.compile(r"objects/sha256/([0-9a-f]{64})")
WEIGHTS = "weights/sha256/"
WEIGHTS_KEY = re.compile(r"weights/sha256/([0-9a-f]{64})")
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

    @property
    def ok(self) -> bool:
        return (all(not r["problems"] for r in self.records) and not self.stray
                and not any(w["problem"] for w in self.weights))

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "ok": self.ok, "records": self.records,
                "objects_checked": self.objects_checked, "bytes_hashed": self.bytes_hashed,
                "unreferenced_objects": self.unreferenced, "stray": self.stray,
                "leftovers": self.leftovers, "weights": self.weights}


class Store:
    """A store at one URL. Build it with :func:`open_store`."""

    def __init__(self, transport: Transport, *, publisher: str | None = None,
                 record_cache: Path | None = None) -> None:
        from zoo import __version__

        self.transport = transport
        self.publisher = publisher or f"zoo {__version__}"
        self.record_cache = record_cache

    @property
    def url(self) -> str:
        return self.transport.url

    # -- publish --------------------------------------------------------------------------

    def publish(self, path: Path, *, sign_key: SigningKey | None = None,
                progress: Progress | None = None,
                check: Callable[[Path, Statement], list[str]] | None = None) -> PublishResult:
        """Upload the artifact at ``path`` (an export folder, an artifact or its manifest)
        with its manifest, operators list and a SHA256SUMS, then write its record.

        Before anything is sent, the record is built and checked exactly as a pull checks it
        (fields, paths, the manifest against the record, SHA256SUMS, and ``check(folder,
        statement)``: the pipeline passes the embedded-manifest check): what every pull would
        refuse is never published (or signed). Objects the store already has (same sha256 and
        size) are not sent again. Raises UsageError for an artifact that differs from its
        manifest, StoreRefusedError for one a pull would refuse, StoreError for the store.
        """
        say = progress or _no_progress
        local = collect(Path(path))
        identity, source = local.facts.identity_and_source()
        record = self._statement_for(local, identity, source, sign_key, check)
        refs = sorted((f.path, f.sha256, f.size) for f in local.files)
        signer = sign_key.public.fingerprint if sign_key else None
        for item in self.lookup(identity):
            rec = item.record
            if rec is not None and sorted((o.path, o.sha256, o.size) for o in
                                          rec.statement.objects) == refs and \
                    (rec.signature.public_key.fingerprint if rec.signature else None) == signer \
                    and signature_status(rec, None) != "invalid" and all(
                        self.transport.size(OBJECTS + sha) == size for _p, sha, size in refs):
                say("record", 0, 0)
                return PublishResult(self.url, identity, source, item.key, rec, [],
                                     [f.path for f in local.files], 0, already=True,
                                     weights_sha256=_weights_sha256(local.facts.raw))
        unique: dict[str, Any] = {}
        for file in local.files:
            unique.setdefault(file.sha256, file)
        present, uploaded, missing = [], [], []
        for sha, file in unique.items():
            if self.transport.size(OBJECTS + sha) == file.size:
                present.append(file)
            else:
                missing.append(file)
        total = sum(f.size for f in missing)
        sent = 0

        for file in missing:
            def step(n: int, name: str = file.path) -> None:
                nonlocal sent
                sent += n
                say(name, sent, total)

            source_data = file.data if file.data is not None else file.source
            self.transport.put(source_data, OBJECTS + file.sha256, file.size, step)
            uploaded.append(file)
        blob = record.to_bytes()
        key = f"{RECORDS}{identity}/{hashlib.sha256(blob).hexdigest()}.json"
        self.transport.write_new(key, blob)
        say("record", total, total)
        by_sha = {f.sha256 for f in uploaded}
        return PublishResult(
            store=self.url, identity=identity, identity_source=source, record_key=key,
            record=record,
            uploaded=[f.path for f in local.files if f.sha256 in by_sha],
            present=[f.path for f in local.files if f.sha256 not in by_sha],
            bytes_uploaded=total, weights_sha256=_weights_sha256(local.facts.raw))

    def check_publishable(self, path: Path,
                          check: Callable[[Path, Statement], list[str]] | None = None) -> None:
        """Raise what :meth:`publish` would raise for ``path`` before it uploads anything
        (UsageError, StoreRefusedError); contacts no store."""
        local = collect(Path(path))
        identity, source = local.facts.identity_and_source()
        self._statement_for(local, identity, source, None, check)

    def _statement_for(self, local: Any, identity: str, source: str,
                       sign_key: SigningKey | None,
                       check: Callable[[Path, Statement], list[str]] | None) -> Record:
        """The record a publish will write, refused (StoreRefusedError) when a pull would
        refuse it."""
        facts = local.facts
        where = f"{local.folder / local.artifact}"
        try:
            record = make_record(
                {"identity": identity, "identity_source": source, "model": facts.model,
                 "format": facts.format, "precision": facts.precision,
                 "untrained": facts.untrained, "artifact": local.artifact,
                 "manifest": local.manifest_name,
                 "manifest_sha256": next(f.sha256 for f in local.files
                                         if f.path == local.manifest_name),
                 "size": sum(f.size for f in local.files if f.path == local.artifact
                             or f.path.startswith(local.artifact + "/"))},
                [f.ref for f in local.files], sign_key, self.publisher)
        except RecordError as exc:
            raise StoreRefusedError(f"refusing to publish {where}: its manifest cannot make a "
                                    f"valid record ({exc}); nothing was uploaded",
                                    [str(exc)]) from None
        st = record.statement
        manifest = next(f for f in local.files if f.path == local.manifest_name)
        sums = next((f.data for f in local.files if f.path == SUMS_NAME), None)
        problems = self._consistency(st, Path(manifest.source).read_bytes(), sums)
        if not problems and check is not None:
            problems = check(local.folder, st)
        if problems:
            raise StoreRefusedError(f"refusing to publish {where}: every pull would refuse it: "
                                    f"{'; '.join(problems)}; nothing was uploaded", problems)
        return record

    # -- weights --------------------------------------------------------------------------

    def publish_weights(self, path: Path, sha256: str, size: int, *,
                        progress: Progress | None = None) -> bool:
        """Upload the weights file at ``path`` as ``weights/sha256/<sha256>`` unless the store
        has it (same size); True when it was sent. ``sha256`` must be the file's (the weights
        cache's verified entries are); a reader checks it again on every pull."""
        if not HEX64.fullmatch(sha256):
            raise StoreConfigError(f"{sha256[:80]!r} is not a sha256 (64 hex)")
        key = WEIGHTS + sha256
        if self.transport.size(key) == size:
            return False
        step = _counter(progress, f"weights {sha256[:12]}", size)
        self.transport.put(Path(path), key, size, step)
        return True

    def pull_weights(self, sha256: str, dest: Path, *, max_size: int | None = None,
                     progress: Progress | None = None) -> str | None:
        """Download ``weights/sha256/<sha256>`` into ``dest`` and return its sha256, or None
        when the store does not have it (or only a file larger than ``max_size``).

        The store is a mirror here, trusted no more than the card's URLs: the bytes must hash
        to their name, which must be the card's full pin (an 8-hex prefix is not asked for:
        anyone who may write to the store could make bytes that match 32 bits). Raises
        StoreRefusedError when the object's bytes are other than its name (``dest`` is then
        removed), StoreUnavailableError when the store cannot be reached.
        """
        if not HEX64.fullmatch(sha256):
            raise StoreConfigError(f"{sha256[:80]!r} is not a full sha256 (64 hex)")
        key = WEIGHTS + sha256
        size = self.transport.size(key)
        if size is None or (max_size is not None and size > max_size):
            return None
        try:
            got = self.transport.get(key, Path(dest), size,
                                     _counter(progress, f"weights {sha256[:12]}", size))
        except (FileNotFoundError, SizeMismatch):
            Path(dest).unlink(missing_ok=True)
            return None
        if got != sha256:
            Path(dest).unlink(missing_ok=True)
            raise StoreRefusedError(f"store {self.url}: {key}: its bytes hash to {got[:16]}… "
                                    "(corrupted or tampered)", [key])
        return got

    # -- records --------------------------------------------------------------------------

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
            from zoo.fsutil import atomic_write_bytes

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
                        from zoo.fsutil import atomic_write_bytes

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

    # -- pull -----------------------------------------------------------------------------

    def pull(self, identity: str, dest_dir: Path, trusted_keys: list[PublicKey] | None = None,
             *, progress: Progress | None = None, keep_record: bool = False,
             include_sums: bool = True,
             check: Callable[[Path, Statement], list[str]] | None = None
             ) -> PullResult | None:
        """Install the artifact published under ``identity`` into ``dest_dir``, verified.

        Returns None on a miss (no record for ``identity``). On a hit, downloads every object,
        checks each one's size and sha256 against the record, the manifest against the record
        (identity, model, format, artifact hashes) and SHA256SUMS, then moves the files into
        ``dest_dir`` (created if needed; meant to be a fresh staging folder): the artifact,
        ``<artifact>.manifest.json``, the operators list when there is one, and SHA256SUMS
        (checked either way; installed unless ``include_sums`` is False; with
        ``keep_record``, also the signed record as ``<artifact>.record.json``).

        ``check(folder, statement)`` may add problems of its own (the pipeline passes
        :func:`zoo.store.embedded.embedded_problems`) before anything is installed.

        With ``trusted_keys``, only records signed by one of them are accepted; without,
        unsigned records are accepted and signatures that do not verify are refused. When
        several records pass, the newest wins. Raises StoreRefusedError (``reasons``: one per
        record) when records exist but none passes, StoreUnavailableError when the store
        cannot be reached; nothing is left in ``dest_dir`` then.
        """
        say = progress or _no_progress
        listed = self.lookup(identity, trusted_keys)
        if not listed:
            return None
        reasons: list[str] = []
        candidates: list[tuple[Record, str, SignatureStatus]] = []
        for item in listed:
            name = item.key.rsplit("/", 1)[1][:16]
            if item.record is None:
                reasons.append(f"record {name}…: {item.error}")
                continue
            if item.revoked:
                reasons.append(f"record {name}…: {item.revoked}")
                continue
            status = signature_status(item.record, trusted_keys)
            refusal = _signature_refusal(item.record, status, bool(trusted_keys))
            if refusal:
                reasons.append(f"record {name}…: {refusal}")
            else:
                candidates.append((item.record, item.key, status))
        candidates.sort(key=lambda c: (c[0].statement.published_at, c[1]), reverse=True)
        for record, key, status in candidates:
            name = key.rsplit("/", 1)[1][:16]
            try:
                files, size = self._install(record, Path(dest_dir), say, keep_record,
                                            include_sums, check)
            except _Refused as exc:
                reasons.append(f"record {name}…: {exc}")
                continue
            return PullResult(self.url, key, record, status, files, size, reasons)
        raise StoreRefusedError(
            f"store {self.url}: {len(listed)} record{'s' * (len(listed) > 1)} for "
            f"{identity[:16]}…, none passed verification: {'; '.join(reasons)}", reasons)

    def _install(self, record: Record, dest: Path, say: Progress, keep_record: bool,
                 include_sums: bool, check: Callable[[Path, Statement], list[str]] | None
                 ) -> tuple[list[Path], int]:
        st = record.statement
        total = sum(o.size for o in st.objects)
        done = 0
        try:
            dest.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".zoo-pull-", dir=dest))
        except OSError as exc:
            raise StoreError(f"cannot write into {dest}: {exc.strerror or exc}") from exc
        try:
            fetched: dict[str, Path] = {}
            for obj in st.objects:
                target = work.joinpath(*obj.path.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                if obj.sha256 in fetched:
                    shutil.copyfile(fetched[obj.sha256], target)
                    done += obj.size
                    continue

                def step(n: int, what: str = obj.path) -> None:
                    nonlocal done
                    done += n
                    say(what, done, total)

                try:
                    sha = self.transport.get(OBJECTS + obj.sha256, target, obj.size, step)
                except FileNotFoundError:
                    raise _Refused(f"object {obj.path} ({obj.sha256[:16]}…) is missing from "
                                   "the store") from None
                except SizeMismatch:
                    raise _Refused(f"object {obj.path} ({obj.sha256[:16]}…) does not have "
                                   f"the recorded {obj.size} bytes") from None
                if sha != obj.sha256:
                    raise _Refused(f"object {obj.path}: sha256 {sha[:16]}… differs from the "
                                   f"recorded {obj.sha256[:16]}… (corrupted or tampered)")
                fetched[obj.sha256] = target
            problems = self._consistency(st, (work / st.manifest).read_bytes(),
                                         (work / SUMS_NAME).read_bytes()
                                         if (work / SUMS_NAME).is_file() else None)
            if not problems and check is not None:
                problems = check(work, st)
            if problems:
                raise _Refused("; ".join(problems))
            if keep_record:
                (work / f"{st.artifact}.record.json").write_bytes(record.to_bytes())
            if not include_sums:
                (work / SUMS_NAME).unlink(missing_ok=True)
            entries = sorted(work.iterdir())
            clash = [e.name for e in entries if (dest / e.name).exists()]
            if clash:
                raise StoreError(f"cannot install into {dest}: {', '.join(clash[:3])} "
                                 "already there (pull into a fresh folder)")
            installed = []
            for entry in entries:
                os.replace(entry, dest / entry.name)
                installed.append(dest / entry.name)
            return installed, total
        except OSError as exc:
            raise StoreError(f"cannot write into {dest}: {exc.strerror or exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

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

    # -- audit ----------------------------------------------------------------------------

    def verify(self, trusted: list[PublicKey] | None = None,
               progress: Progress | None = None) -> VerifyReport:
        """Re-check every record (name, fields, signature, manifest) and every object it names
        (present, size, sha256: each distinct object is downloaded and hashed once) and every
        weights file (its bytes must hash to its name). Lists objects no record names and keys
        that are not part of the layout. Changes nothing."""
        say = progress or _no_progress
        report = VerifyReport(self.url)
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
            refusal = _signature_refusal(record, status, bool(trusted))
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
                                                       if o.path == SUMS_NAME]), 16 << 20)
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
        if self.transport.local is not None:
            report.leftovers = [k for k, _ in self.transport.list("tmp/")]
        report.unreferenced = sorted(OBJECTS + sha for key in objects
                                     if (m := OBJECT_KEY.fullmatch(key))
                                     and (sha := m.group(1)) not in referenced)
        return report

    def _check_object(self, sha: str, size: int, present: dict[str, int], report: VerifyReport,
                      say: Progress, total: int) -> str | None:
        key = OBJECTS + sha
        if key not in present:
            return "object missing"
        if present[key] != size:
            return f"object has {present[key]} bytes, the record says {size}"
        return self._check_blob(key, sha, size, report, say, total)

    def _check_blob(self, key: str, sha: str, size: int, report: VerifyReport, say: Progress,
                    total: int) -> str | None:
        """Download ``key`` (``size`` bytes) and check that it hashes to ``sha``."""
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


def _signature_refusal(record: Record, status: str, keys_given: bool) -> str | None:
    if status == "invalid":
        return "its signature does not verify (the record was altered or signed wrongly)"
    if keys_given and status == "unsigned":
        return "unsigned, and a trusted key is required"
    if keys_given and status == "untrusted":
        assert record.signature is not None
        return f"signed by {record.signature.public_key.short}, which is not a trusted key"
    return None


def open_store(url: str | os.PathLike[str], options: dict[str, Any] | None = None, *,
               attempts: int | None = None, backoff: float | None = None,
               part_size: int | None = None, record_cache: Path | bool | None = True) -> Store:
    """The store at ``url`` (``s3://bucket/prefix``, ``file:///path``, a plain path, or any
    fsspec URL). ``options`` go to the fsspec file system (for S3: ``endpoint_url``, ``key``,
    ``secret``, ``anon``, ``client_kwargs``, ...). Nothing is contacted until first use.

    ``attempts``/``backoff`` bound the retries of transient failures; ``record_cache`` keeps
    verified record files under ``ZOO_HOME/store/records`` (True) or a given folder.
    """
    from zoo.store import transport as tr

    url = os.fspath(url)
    fs, root = open_filesystem(url, options or {})
    kwargs: dict[str, Any] = {}
    if attempts is not None:
        kwargs["attempts"] = attempts
    if backoff is not None:
        kwargs["backoff"] = backoff
    if part_size is not None:
        kwargs["part_size"] = part_size
        kwargs["multipart_threshold"] = 2 * part_size
    transport = tr.Transport(url, fs, root, **kwargs)
    cache: Path | None
    if record_cache is True:
        from zoo.paths import zoo_home

        cache = zoo_home() / "store" / "records"
    else:
        cache = record_cache or None
    return Store(transport, record_cache=cache)
