"""The local side of the store: what an export folder holds and what of it is published.

An export folder (what ``zoo fetch NAME --format F -o DIR`` writes) holds the artifact (a file,
or a folder such as a ``.mlpackage``), ``<artifact>.manifest.json``, sometimes the operators
list the manifest names, and SHA256SUMS. The manifest is read as plain JSON with only the facts
the store needs checked (model, format, precision, identity, the artifact's hashes), so the
store works across manifest versions and never trusts more than it checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo._core.fs import sha256_file
from zoo._core.jsonio import json_object
from zoo._core.names import MAX_MANIFEST_BYTES, SIDECAR_SUFFIX
from zoo.errors import UsageError
from zoo.export.checksums import read_sums
from zoo.store.record import (
    HEX64,
    SUMS_NAME,
    ObjectRef,
    RecordError,
    Statement,
    check_object_path,
)

SIDECAR = SIDECAR_SUFFIX


@dataclass(frozen=True)
class ManifestFacts:
    """What the store reads from a manifest (all checked for type)."""

    model: str
    format: str
    precision: str
    untrained: bool
    export_file: str
    identity: str | None  # export.identity; None in manifests written before it existed
    artifact_file: str
    artifact_sha256: str
    artifact_size: int
    artifact_files: tuple[ObjectRef, ...] | None  # folder artifacts: every file inside
    operators_file: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    def identity_and_source(self) -> tuple[str, str]:
        """(identity, 'manifest') when the manifest records one, else the fallback."""
        if self.identity is not None:
            return self.identity, "manifest"
        return fallback_identity(self.raw), "fallback"


def fallback_identity(raw: dict[str, Any]) -> str:
    """For manifests without ``export.identity``: sha256 over the manifest's own facts that
    determine the bytes (model, weights, export facts, output). Stable, but never equal to a
    real export identity, so such records are found by ``zoo store list``, not by ``fetch``."""
    payload = {"zoo-store-fallback": 1, "model": raw.get("model"),
               "weights": raw.get("weights"), "export": raw.get("export"),
               "output": raw.get("output")}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def _field(data: Any, path: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    node = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not ...:
                return default
            raise ValueError(f"manifest field {path} is missing")
        node = node[part]
    if node is None and default is None:
        return None
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        raise ValueError(f"manifest field {path} has the wrong type")
    return node


def _hex(value: str, what: str) -> str:
    if not HEX64.fullmatch(value):
        raise ValueError(f"manifest field {what} is not a sha256")
    return value


def parse_manifest(blob: bytes) -> ManifestFacts:
    """Read the store's facts from a sidecar manifest's bytes (ValueError naming the field)."""
    raw = json_object(blob, MAX_MANIFEST_BYTES, "zoo manifest")  # JSONRefused: a ValueError
    identity = _field(raw, "export.identity", str, None)
    files = _field(raw, "artifact.files", list, None)
    refs: tuple[ObjectRef, ...] | None = None
    if files is not None:
        found: list[ObjectRef] = []
        for item in files:
            if not isinstance(item, dict):
                raise ValueError("manifest field artifact.files has the wrong type")
            found.append(ObjectRef(_field(item, "path", str), _hex(_field(item, "sha256", str),
                                                                    "artifact.files.sha256"),
                                   _field(item, "size", int)))
        refs = tuple(found)
    return ManifestFacts(
        model=_field(raw, "model.name", str), format=_field(raw, "export.format", str),
        precision=_field(raw, "export.precision", str, "fp32") or "fp32",
        untrained=_field(raw, "untrained", bool),
        export_file=_field(raw, "export.file", str),
        identity=_hex(identity, "export.identity") if identity is not None else None,
        artifact_file=_field(raw, "artifact.file", str),
        artifact_sha256=_hex(_field(raw, "artifact.sha256", str), "artifact.sha256"),
        artifact_size=_field(raw, "artifact.size", int), artifact_files=refs,
        operators_file=_field(raw, "export.operators_file", str, None), raw=raw,
    )


def tree_digest(files: list[ObjectRef] | tuple[ObjectRef, ...]) -> str:
    """A folder artifact's sha256 as the manifest defines it
    (see zoo.export.manifest.tree_digest)."""
    lines = "".join(f"{f.path}\0{f.size}\0{f.sha256}\n" for f in sorted(files,
                                                                       key=lambda f: f.path))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def manifest_problems(st: Statement, facts: ManifestFacts) -> list[str]:
    """Where a record's statement and the manifest it points to disagree (empty: they agree)."""
    problems = []
    if facts.artifact_file != st.artifact or facts.export_file != st.artifact:
        problems.append(f"the manifest describes {facts.artifact_file!r}, the record "
                        f"{st.artifact!r}")
    for mine, theirs, what in ((st.model, facts.model, "model"),
                               (st.format, facts.format, "format"),
                               (st.precision, facts.precision, "precision"),
                               (st.untrained, facts.untrained, "untrained")):
        if mine != theirs:
            problems.append(f"{what}: record {mine!r}, manifest {theirs!r}")
    identity, source = facts.identity_and_source()
    if identity != st.identity or source != st.identity_source:
        problems.append(f"identity: the record says {st.identity[:16]}… ({st.identity_source}),"
                        f" the manifest gives {identity[:16]}… ({source})")
    objects = {o.path: o for o in st.objects}
    if facts.artifact_files is None:
        obj = objects.get(st.artifact)
        if obj is None or (obj.sha256, obj.size) != (facts.artifact_sha256,
                                                     facts.artifact_size):
            problems.append(f"{st.artifact}: the record's hash differs from the manifest's")
    else:
        inside = {p[len(st.artifact) + 1:]: o for p, o in objects.items()
                  if p.startswith(st.artifact + "/")}
        listed = {f.path: f for f in facts.artifact_files}
        if set(inside) != set(listed) or any(
                (inside[p].sha256, inside[p].size) != (f.sha256, f.size)
                for p, f in listed.items()) or \
                tree_digest(facts.artifact_files) != facts.artifact_sha256:
            problems.append(f"{st.artifact}: the record's files differ from the manifest's")
    if facts.operators_file and facts.operators_file not in objects:
        problems.append(f"the manifest names {facts.operators_file!r}, the record lacks it")
    return problems


@dataclass(frozen=True)
class LocalFile:
    """One file to publish: its path in the export folder, where its bytes are, its hash."""

    path: str
    source: Path | None  # None: ``data`` holds the bytes (a generated SHA256SUMS)
    sha256: str
    size: int
    data: bytes | None = None

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.path, self.sha256, self.size)


@dataclass(frozen=True)
class LocalExport:
    """An artifact in an export folder, with its files hashed and checked against the
    manifest."""

    folder: Path
    facts: ManifestFacts
    files: tuple[LocalFile, ...]

    @property
    def artifact(self) -> str:
        return self.facts.artifact_file

    @property
    def manifest_name(self) -> str:
        return self.artifact + SIDECAR


def locate(path: Path) -> tuple[Path, str]:
    """(export folder, artifact name) for a folder `zoo fetch -o` wrote, an artifact or its
    manifest; UsageError naming the way out."""
    if not path.exists():
        raise UsageError(f"{path} does not exist; publish a folder `zoo fetch --format F -o DIR`"
                         " wrote, or an artifact in it")
    if path.name.endswith(SIDECAR) and path.is_file():
        return path.parent, path.name[: -len(SIDECAR)]
    if path.with_name(path.name + SIDECAR).is_file():
        return path.parent, path.name
    if path.is_dir():
        found = sorted(p.name[: -len(SIDECAR)] for p in path.iterdir()
                       if p.name.endswith(SIDECAR) and p.is_file())
        if len(found) == 1:
            return path, found[0]
        if not found:
            raise UsageError(f"{path} holds no zoo manifest (*{SIDECAR}); publish a folder "
                             "`zoo fetch --format F -o DIR` wrote")
        names = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise UsageError(f"{path} holds {len(found)} artifacts ({names}); name one, e.g. "
                         f"`zoo publish {path / found[0]}`")
    raise UsageError(f"{path} has no {path.name}{SIDECAR} beside it; publish an artifact "
                     "`zoo fetch --format F` wrote")


def exports_in(path: Path) -> list[Path]:
    """The artifacts to publish for ``path``: every export in a folder `zoo fetch -o` wrote
    (one per ``*.manifest.json``, sorted), or the artifact ``path`` names."""
    if path.is_dir() and not path.with_name(path.name + SIDECAR).is_file():
        found = sorted(p.name[: -len(SIDECAR)] for p in path.iterdir()
                       if p.name.endswith(SIDECAR) and p.is_file())
        if len(found) > 1:
            return [path / name for name in found]
    return [path]


def _folder_files(root: Path) -> list[tuple[str, Path]]:
    found = []
    for base, dirs, names in os.walk(root, followlinks=False):
        for name in [*dirs, *names]:
            if Path(base, name).is_symlink():
                raise UsageError(f"{Path(base, name)} is a symbolic link; zoo publishes "
                                 "plain files only")
        for name in names:
            found.append((Path(base, name).relative_to(root).as_posix(), Path(base, name)))
    return sorted(found)


def sums_text(files: list[ObjectRef] | tuple[ObjectRef, ...]) -> bytes:
    """A SHA256SUMS (``sha256sum -c`` format) for exactly these files."""
    return "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path)
                   if f.path != SUMS_NAME).encode("utf-8")


def collected(path: Path | LocalExport) -> LocalExport:
    """``path`` collected (see :func:`collect`), or an export already collected, as it is:
    a caller that checks, asks custody and publishes hashes the files once."""
    return path if isinstance(path, LocalExport) else collect(Path(path))


def collect(path: Path) -> LocalExport:
    """Find, hash and check everything to publish for ``path`` (see :func:`locate`).

    Refuses (UsageError) an artifact whose bytes differ from its manifest, or a folder whose
    SHA256SUMS disagrees with its files: they were changed after export.
    """
    folder, name = locate(path)
    sidecar = folder / (name + SIDECAR)
    try:
        facts = parse_manifest(sidecar.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{sidecar}: not a valid zoo manifest: {exc}") from None
    if facts.artifact_file != name or facts.export_file != name:
        raise UsageError(f"{sidecar} describes {facts.artifact_file!r}, not {name!r}")
    try:
        check_object_path(name, name)
    except RecordError as exc:
        raise UsageError(f"{name}: {exc}") from None
    ops_name = facts.operators_file
    if ops_name is not None and (ops_name == SUMS_NAME or "/" in ops_name or
                                 not ops_name.startswith(name + ".")):
        from zoo.store.errors import StoreRefusedError

        raise StoreRefusedError(f"refusing to publish {folder / name}: its manifest names the "
                                f"operators file {ops_name[:80]!r}, which is not a sidecar "
                                f"'{name}.*' beside it (every pull would refuse it); nothing "
                                "was uploaded")
    artifact = folder / name
    files: list[LocalFile] = []
    if facts.artifact_files is None:
        if not artifact.is_file() or artifact.is_symlink():
            raise UsageError(f"{artifact} is not a plain file")
        sha, size = sha256_file(artifact), artifact.stat().st_size
        if (sha, size) != (facts.artifact_sha256, facts.artifact_size):
            raise UsageError(f"{artifact}: its bytes differ from its manifest (changed after "
                             "export?); export it again before publishing")
        files.append(LocalFile(name, artifact, sha, size))
    else:
        if not artifact.is_dir() or artifact.is_symlink():
            raise UsageError(f"{artifact} is not a folder")
        listed = {f.path: f for f in facts.artifact_files}
        present = _folder_files(artifact)
        if {p for p, _ in present} != set(listed):
            raise UsageError(f"{artifact}: its files differ from its manifest's list")
        for rel, path in present:
            sha, size = sha256_file(path), path.stat().st_size
            if (sha, size) != (listed[rel].sha256, listed[rel].size):
                raise UsageError(f"{artifact}/{rel}: its bytes differ from the manifest; "
                                 "export it again before publishing")
            files.append(LocalFile(f"{name}/{rel}", path, sha, size))
    files.append(LocalFile(sidecar.name, sidecar, sha256_file(sidecar), sidecar.stat().st_size))
    if facts.operators_file:
        ops = folder / facts.operators_file
        if not ops.is_file() or ops.is_symlink():
            raise UsageError(f"{ops} is missing (the manifest names it)")
        files.append(LocalFile(ops.name, ops, sha256_file(ops), ops.stat().st_size))
    for file in files:
        try:
            check_object_path(file.path, name)
        except RecordError as exc:
            raise UsageError(f"{file.path}: {exc}") from None
    recorded = read_sums(folder / SUMS_NAME)
    wrong = [f.path for f in files if recorded.get(f.path, f.sha256) != f.sha256]
    if wrong:
        raise UsageError(f"{folder / SUMS_NAME} disagrees with {', '.join(wrong[:3])} (changed "
                         "after export?); export again before publishing")
    data = sums_text([f.ref for f in files])
    files.append(LocalFile(SUMS_NAME, None, hashlib.sha256(data).hexdigest(), len(data), data))
    return LocalExport(folder, facts, tuple(files))
