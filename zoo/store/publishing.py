"""Publishing an export folder: every check a pull makes, then objects, then a journal entry
(:mod:`zoo.store.index`), then the record."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo._core.log import warn
from zoo.store.base import (
    OBJECTS,
    RECORDS,
    Progress,
    PublishResult,
    _no_progress,
    _weights_sha256,
)
from zoo.store.errors import StoreError, StoreRefusedError
from zoo.store.export_folder import (
    LocalExport,
    collected,
)
from zoo.store.index import journal_key
from zoo.store.keys import SigningKey
from zoo.store.listing import RecordsMixin
from zoo.store.record import (
    SUMS_NAME,
    Record,
    RecordError,
    Statement,
    make_record,
    signature_status,
)


class PublishMixin(RecordsMixin):
    """Publish artifacts (objects first, the record last)."""

    def publish(self, path: Path | LocalExport, *, sign_key: SigningKey | None = None,
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
        local = collected(path)
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
        # the journal entry first: a reader that lists through the index finds the record by
        # it (an entry whose record is not there yet, or any more, is passed over). Best
        # effort: without it the record is listed after the next `zoo store index`
        try:
            self.transport.write_new(journal_key(key), b"")
        except StoreError as exc:
            warn(f"store {self.url}: cannot write the index journal entry for {key} ({exc}); "
                 "the record is published, and listings through the index show it after the "
                 "next `zoo store index` (or with --full)")
        self.transport.write_new(key, blob)
        say("record", total, total)
        by_sha = {f.sha256 for f in uploaded}
        return PublishResult(
            store=self.url, identity=identity, identity_source=source, record_key=key,
            record=record,
            uploaded=[f.path for f in local.files if f.sha256 in by_sha],
            present=[f.path for f in local.files if f.sha256 not in by_sha],
            bytes_uploaded=total, weights_sha256=_weights_sha256(local.facts.raw))

    def check_publishable(self, path: Path | LocalExport,
                          check: Callable[[Path, Statement], list[str]] | None = None) -> None:
        """Raise what :meth:`publish` would raise for ``path`` before it uploads anything
        (UsageError, StoreRefusedError); contacts no store."""
        local = collected(path)
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
