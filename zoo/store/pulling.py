"""Pulling an artifact: the newest record that passes every check, installed atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from zoo.store.base import (
    OBJECTS,
    Progress,
    PullResult,
    _no_progress,
    _Refused,
)
from zoo.store.errors import StoreError, StoreRefusedError
from zoo.store.keys import PublicKey
from zoo.store.listing import RecordsMixin
from zoo.store.record import (
    SUMS_NAME,
    Record,
    SignatureStatus,
    Statement,
    signature_refusal,
    signature_status,
)
from zoo.store.transport import SizeMismatch


class PullMixin(RecordsMixin):
    """Install verified artifacts from the store."""

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
            refusal = signature_refusal(status, item.record.signature, bool(trusted_keys))
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
