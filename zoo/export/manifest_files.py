"""The one reader of manifests from outside: a sidecar file or text (bounded, validated, one
line on failure), and the copy embedded in an artifact (parsed from the container by the
format's exporter, or, for containers only their runtime can parse, by the runtime in an
isolated, confined child). ``zoo verify``, ``zoo.read_manifest``, predictors and the site all
read manifests here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zoo._core.names import MAX_MANIFEST_BYTES

if TYPE_CHECKING:
    from zoo.export.base import Exporter
    from zoo.export.manifest import Manifest

#: where an embedded manifest was read, for messages
FROM_CONTAINER = "read from the container"
FROM_RUNTIME = "read by the runtime in a child process"


def parse_manifest(text: str | bytes) -> Manifest:
    """A manifest from its JSON text; ValueError with a one-line reason (size, encoding, the
    first field that is wrong)."""
    from pydantic import ValidationError

    from zoo._core.jsonio import json_object
    from zoo.export.manifest import Manifest

    data = json_object(text, MAX_MANIFEST_BYTES, "zoo manifest")  # no duplicate keys, no NaN
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"field {loc}: {err['msg']}") from None


def read_manifest_file(sidecar: Path) -> Manifest:
    """Parse a sidecar manifest, reading at most one byte past the limit; ValueError with a
    one-line reason."""
    try:
        with open(sidecar, "rb") as fh:
            blob = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    try:
        return parse_manifest(blob)
    except UnicodeDecodeError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


class EmbeddedUnreadable(Exception):
    """The artifact's embedded manifest could not be read (one-line reason)."""


def read_embedded(exporter: Exporter, artifact: Path, time_limit: float = 120.0, *,
                  expected: str | None = None, memory_limit: int | None = None,
                  confine: bool = True) -> tuple[str | None, str]:
    """The manifest JSON embedded in ``artifact`` (None: it embeds none zoo can read) and
    where it was read. The exporter parses the container in this process and runs nothing;
    formats whose container only their runtime can read (ExecuTorch aborts its process on a
    corrupt file) are asked in an isolated child with the given confinement (``expected``:
    the artifact's sha256 the child's private copy must match). Raises
    :class:`EmbeddedUnreadable` when a reader fails on the bytes."""
    from zoo.export.isolated import DEFAULT_MEMORY_LIMIT, ChildFailed, run_child
    from zoo.export.runtime import runtime_source

    try:
        embedded = exporter.read_embedded(artifact)
    except Exception as exc:  # hostile bytes: the reader parses, never runs
        raise EmbeddedUnreadable(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if embedded is not None or "def read_embedded" not in runtime_source(exporter.runtime) \
            or exporter.runtime_unavailable() is not None:
        return embedded, FROM_CONTAINER
    try:
        answer = run_child(exporter.runtime, artifact, {"action": "embedded"}, time_limit,
                           expected=expected, confine=confine,
                           memory_limit=memory_limit or DEFAULT_MEMORY_LIMIT)
    except ChildFailed as exc:
        raise EmbeddedUnreadable(str(exc)) from None
    found = answer.get("embedded")
    return (found if isinstance(found, str) else None), FROM_RUNTIME
