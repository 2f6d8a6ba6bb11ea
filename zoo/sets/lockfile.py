"""The lockfile (``zoo.lock``): exactly which bytes a plan produced, for `zoo sync --locked`.

TOML, one ``[[artifact]]`` block per artifact in key order, every file with its size and
sha256, the manifest's hash, the weights' sha256, the export identity, the store record and
signer when the bytes came from a team store, and the zoo and plugin code that made them.
Nothing in it depends on how a run was executed (processes, shards, cache hits), so every
execution mode writes the same lock. The second line holds a sha256 of the rest: a lock
edited by hand is refused, and a lock written by a newer zoo names the version it needs.
Written atomically, last.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo._core.names import HEX64, inside
from zoo.errors import UsageError

LOCK_NAME = "zoo.lock"
LOCK_VERSION = 1
MAX_LOCK_BYTES = 64 << 20
_HEADER = "# zoo.lock: written by `zoo sync`; do not edit by hand (the checksum catches edits)."


@dataclass(frozen=True)
class LockedFile:
    path: str  # relative to the artifact's folder
    sha256: str
    size: int


@dataclass(frozen=True)
class LockedArtifact:
    """What one plan entry produced."""

    key: str
    model: str
    format: str
    precision: str
    input_size: tuple[int, int]
    folder: str
    artifact: str
    identity: str
    weights: str  # sha256, or "untrained"
    manifest_sha256: str
    files: tuple[LockedFile, ...]
    source: str  # how this run got it: "export", "cache", "store" (not written: the same
    # lock whatever the execution mode); "lock" when read back
    code: dict[str, str] = field(default_factory=dict)  # builder/exporter/zoo versions
    store_record: str | None = None
    signer: str | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Lock:
    plan: str  # plan_digest of the entries it was written for
    artifacts: tuple[LockedArtifact, ...]
    zoo: str = ""

    def by_key(self) -> dict[str, LockedArtifact]:
        return {a.key: a for a in self.artifacts}


def _q(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)


def dumps(lock: Lock) -> str:
    """The lock's text (stable: the same lock gives the same bytes)."""
    body = [f"version = {LOCK_VERSION}", f"zoo = {_q(lock.zoo)}", f"plan = {_q(lock.plan)}"]
    for a in sorted(lock.artifacts, key=lambda a: a.key):
        body += ["", "[[artifact]]"]
        for name in ("key", "model", "format", "precision"):
            body.append(f"{name} = {_q(getattr(a, name))}")
        body.append(f"input_size = [{a.input_size[0]}, {a.input_size[1]}]")
        for name in ("folder", "artifact", "identity", "weights", "manifest_sha256"):
            body.append(f"{name} = {_q(getattr(a, name))}")
        for name in ("store_record", "signer"):
            if getattr(a, name):
                body.append(f"{name} = {_q(getattr(a, name))}")
        if a.code:
            body.append("code = { " + ", ".join(f"{k} = {_q(v)}" for k, v in
                                                 sorted(a.code.items())) + " }")
        body.append("files = [")
        for f in sorted(a.files, key=lambda f: f.path):
            body.append(f"  {{ path = {_q(f.path)}, sha256 = {_q(f.sha256)}, size = {f.size} }},")
        body.append("]")
    text = "\n".join(body) + "\n"
    return f"{_HEADER}\n# sha256: {hashlib.sha256(text.encode()).hexdigest()}\n{text}"


def _field(data: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise UsageError(f"{where}: field {name} is missing or not a {kind.__name__}")
    return value


def loads(text: str, where: str) -> Lock:
    """Parse a lock's text; UsageError for a hand-edited, malformed or newer lock."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    lines = text.split("\n", 2)
    if len(lines) < 3 or not lines[1].startswith("# sha256: "):
        raise UsageError(f"{where}: not a zoo.lock (no checksum line); run `zoo sync` to "
                         "write one")
    try:
        data = tomllib.loads(lines[2])
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: not valid TOML ({exc}); run `zoo sync` to rewrite it") \
            from None
    version = data.get("version")
    if isinstance(version, int) and version > LOCK_VERSION:
        raise UsageError(f"{where}: written by a newer zoo (lock version {version}, this zoo "
                         f"reads {LOCK_VERSION}); upgrade zoo")
    if hashlib.sha256(lines[2].encode()).hexdigest() != lines[1][len("# sha256: "):].strip():
        raise UsageError(f"{where}: edited by hand (its checksum does not match); a lock is "
                         "written only by `zoo sync`: run it to rewrite the lock")
    if version != LOCK_VERSION:
        raise UsageError(f"{where}: unknown lock version {version!r}")
    artifacts = []
    for i, item in enumerate(data.get("artifact", [])):
        at = f"{where}: artifact {i + 1}"
        files = tuple(LockedFile(_field(f, "path", str, at), _field(f, "sha256", str, at),
                                 _field(f, "size", int, at)) for f in item.get("files", []))
        size = _field(item, "input_size", list, at)
        artifacts.append(LockedArtifact(
            key=_field(item, "key", str, at), model=_field(item, "model", str, at),
            format=_field(item, "format", str, at),
            precision=_field(item, "precision", str, at),
            input_size=(int(size[0]), int(size[1])), folder=_field(item, "folder", str, at),
            artifact=_field(item, "artifact", str, at),
            identity=_field(item, "identity", str, at),
            weights=_field(item, "weights", str, at),
            manifest_sha256=_field(item, "manifest_sha256", str, at), files=files,
            source="lock", code=dict(item.get("code", {})),
            store_record=item.get("store_record"), signer=item.get("signer")))
        for path in (artifacts[-1].folder, *(f.path for f in files)):
            if not inside(path):
                raise UsageError(f"{at}: {path[:80]!r} is not a path inside the output folder")
        if not all(HEX64.fullmatch(f.sha256) for f in files):
            raise UsageError(f"{at}: a file's sha256 is not 64 hex digits")
    return Lock(plan=_field(data, "plan", str, where), artifacts=tuple(artifacts),
                zoo=str(data.get("zoo", "")))


def read_lock(path: Path) -> Lock | None:
    """The lock at ``path``, or None when there is none."""
    if not path.exists():
        return None
    if path.stat().st_size > MAX_LOCK_BYTES:
        raise UsageError(f"{path}: larger than any zoo.lock")
    return loads(path.read_text(encoding="utf-8"), str(path))


def write_lock(path: Path, lock: Lock) -> None:
    """Write the lock atomically."""
    from zoo._core.fs import atomic_write_text

    atomic_write_text(path, dumps(lock))
