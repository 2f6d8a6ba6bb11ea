"""Read an artifact's manifest the way an app does: the sidecar beside it, or the copy embedded
inside it, checked against each other when both exist.

``zoo.read_manifest(path)`` takes an artifact (a file or a folder such as ``.mlpackage``) or
its ``<artifact>.manifest.json`` and returns the typed :class:`~zoo.export.manifest.Manifest`. The
embedded copy is read by the format's exporter without running anything (it parses the
container only). A sidecar whose content differs from the embedded copy is refused: one of
them was edited, and an app must not guess which.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import ExportError, UsageError

if TYPE_CHECKING:
    from zoo.export.base import Exporter
    from zoo.export.manifest import Manifest

MAX_MANIFEST_BYTES = 16 << 20


def exporter_for(artifact: Path) -> Exporter | None:
    """The installed format whose suffix the artifact's name ends with (longest first)."""
    from zoo.export import available_formats, get_exporter

    matches = []
    for fmt in available_formats():
        try:
            exporter = get_exporter(fmt)
        except Exception:  # a broken format plugin is reported by `zoo plugins`, not here
            continue
        if artifact.name.endswith(exporter.suffix):
            matches.append(exporter)
    matches.sort(key=lambda e: len(e.suffix), reverse=True)
    return matches[0] if matches else None


def read_embedded(exporter: Exporter, artifact: Path, time_limit: float = 120.0) -> str | None:
    """The manifest JSON embedded in ``artifact``: parsed from the container by the exporter
    in this process, or, for formats whose container only their runtime can read (ExecuTorch
    aborts its process on a corrupt file), by the runtime in an isolated child process."""
    from zoo.export.isolated import ChildFailed, run_child
    from zoo.export.runtime import runtime_source

    try:
        embedded = exporter.read_embedded(artifact)
    except Exception as exc:  # hostile bytes: the reader parses, never runs
        raise ExportError(f"{artifact}: cannot read the manifest embedded in it "
                          f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if embedded is None and "def read_embedded" in runtime_source(exporter.runtime) and \
            exporter.runtime_unavailable() is None:
        try:
            answer = run_child(exporter.runtime, artifact, {"action": "embedded"}, time_limit)
        except ChildFailed as exc:
            raise ExportError(f"{artifact}: cannot read the manifest embedded in it ({exc})"
                              ) from None
        found = answer.get("embedded")
        embedded = found if isinstance(found, str) else None
    return embedded


def _parse(text: str | bytes, where: str) -> Manifest:
    from pydantic import ValidationError

    from zoo.export.manifest import Manifest

    if len(text) > MAX_MANIFEST_BYTES:
        raise UsageError(f"{where}: {len(text)} bytes is larger than any zoo manifest")
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise UsageError(f"{where}: not a valid zoo manifest: field {loc}: {err['msg']}"
                         ) from None


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of the artifact at ``path`` (the artifact, a folder artifact, or its
    ``.manifest.json``): the sidecar when there is one, else the copy embedded in the artifact.

    Raises :class:`UsageError` when there is no manifest to read or it is not valid, and
    :class:`ExportError` when the sidecar and the embedded copy disagree.
    """
    from zoo.export.manifest import SIDECAR_SUFFIX, sidecar_paths

    artifact, sidecar = sidecar_paths(Path(path))
    if not artifact.exists() and not sidecar.is_file():
        raise UsageError(f"{path}: no such artifact or manifest; make one with "
                         "`zoo fetch NAME --format F`")
    exporter = exporter_for(artifact) if artifact.exists() else None
    embedded = read_embedded(exporter, artifact) if exporter is not None else None
    if sidecar.is_file():
        with open(sidecar, "rb") as fh:
            blob = fh.read(MAX_MANIFEST_BYTES + 1)
        manifest = _parse(blob, str(sidecar))
        if embedded is not None and embedded != manifest.embedded().to_json():
            raise ExportError(f"{sidecar.name} differs from the manifest embedded in "
                              f"{artifact.name}: one of them was edited after export; export "
                              "again (or compare them with `zoo verify`)")
        return manifest
    if embedded is None:
        why = "its format is not installed here" if exporter is None else \
            "the artifact embeds none that zoo can read"
        raise UsageError(f"{artifact}: no {artifact.name}{SIDECAR_SUFFIX} beside it, and {why}")
    return _parse(embedded, f"the manifest embedded in {artifact}")
