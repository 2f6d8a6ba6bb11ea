"""Provenance of a local artifact: is there a record, signed by a trusted key, for exactly
these bytes? Used by ``zoo verify --trusted-key``.

Records come from ``<artifact>.record.json`` beside the artifact (``Store.pull(...,
keep_record=True)`` installs it) and from the team store, looked up by the manifest's export
identity. A record vouches for the artifact only when its signature verifies with one of the
trusted keys *and* every file of the artifact and its manifest hashes to what it lists.
"""

from __future__ import annotations

from pathlib import Path

from zoo._core.fs import sha256_file
from zoo._core.names import SIDECAR_SUFFIX
from zoo.store.keys import PublicKey
from zoo.store.record import Record, RecordError, parse_record, signature_status
from zoo.store.revocation import describe, revoked_by
from zoo.store.store import Store

RECORD_SUFFIX = ".record.json"
MAX_LOCAL_RECORD = 1 << 20


def local_files(artifact: Path, sidecar: Path) -> dict[str, str]:
    """{path in the export folder: sha256} for the artifact (every file of a folder artifact)
    and its sidecar manifest."""
    files = {sidecar.name: sha256_file(sidecar)}
    if artifact.is_dir():
        for path in sorted(p for p in artifact.rglob("*") if p.is_file()):
            files[f"{artifact.name}/{path.relative_to(artifact).as_posix()}"] = sha256_file(path)
    else:
        files[artifact.name] = sha256_file(artifact)
    return files


def _mismatch(record: Record, files: dict[str, str], artifact: str) -> str | None:
    listed = {o.path: o.sha256 for o in record.statement.objects}
    mine = {p: s for p, s in listed.items() if p == artifact or p.startswith(f"{artifact}/")
            or p == f"{artifact}{SIDECAR_SUFFIX}"}
    if set(mine) != set(files):
        missing = sorted(set(files) ^ set(mine))[:3]
        return f"lists other files ({', '.join(missing)})"
    changed = sorted(p for p, sha in files.items() if mine[p] != sha)
    return f"lists other bytes for {', '.join(changed[:3])}" if changed else None


def check_provenance(artifact: Path, sidecar: Path, identity: str | None,
                     trusted: list[PublicKey], store: Store | None) -> tuple[bool, str]:
    """(ok, detail): whether a record signed by one of ``trusted`` vouches for these bytes."""
    candidates: list[tuple[str, Record | None, str | None]] = []
    beside = artifact.with_name(artifact.name + RECORD_SUFFIX)
    if beside.is_file():
        try:
            with open(beside, "rb") as fh:
                candidates.append((beside.name, parse_record(fh.read(MAX_LOCAL_RECORD)), None))
        except (OSError, RecordError, ValueError) as exc:
            candidates.append((beside.name, None, str(exc)))
    revoked: dict[str, str] = {}  # record sha256 -> why
    if store is not None and identity:
        for item in store.lookup(identity, trusted):
            candidates.append((item.key.rsplit("/", 1)[-1][:16] + "…", item.record, item.error))
            if item.revoked and item.record is not None:
                revoked[item.record.digest] = item.revoked
        tombs = store.tombstones(identity)
    else:
        tombs = []
    if not candidates:
        where = f" or in the store {store.url}" if store is not None else \
            " (pass --store URL or set ZOO_STORE to look it up)"
        return False, f"no signed record for this artifact beside it{where}"
    files = local_files(artifact, sidecar)
    reasons = []
    for name, record, error in candidates:
        if record is None:
            reasons.append(f"{name}: unreadable ({error})")
            continue
        status = signature_status(record, trusted)
        if status != "trusted":
            signer = record.signature.public_key.short if record.signature else None
            reasons.append(f"{name}: " + {"unsigned": "unsigned",
                                           "invalid": "its signature does not verify",
                                           "untrusted": f"signed by {signer}, not a trusted key",
                                           }.get(status, status))
            continue
        tomb = revoked_by(record, record.digest, tombs, trusted) if tombs else None
        if record.digest in revoked or tomb is not None:
            why = revoked.get(record.digest) or (describe(tomb) if tomb else "revoked")
            reasons.append(f"{name}: {why}")
            continue
        problem = _mismatch(record, files, artifact.name)
        if problem is not None:
            reasons.append(f"{name}: {problem}")
            continue
        assert record.signature is not None
        return True, (f"signed by {record.signature.public_key.short} (trusted), "
                      f"published {record.statement.published_at}")
    return False, "; ".join(reasons)
