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


def _embedded(exporter: Exporter, artifact: Path) -> str | None:
    from zoo.export.manifest_files import EmbeddedUnreadable, read_embedded

    try:
        return read_embedded(exporter, artifact)[0]
    except EmbeddedUnreadable as exc:
        raise ExportError(f"{artifact}: cannot read the manifest embedded in it ({exc})"
                          ) from None


def _parse(text: str | bytes, where: str) -> Manifest:
    from zoo.export.manifest_files import parse_manifest

    try:
        return parse_manifest(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: not a valid zoo manifest: {exc}") from None


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
    embedded = _embedded(exporter, artifact) if exporter is not None else None
    if sidecar.is_file():
        from zoo._core.names import MAX_MANIFEST_BYTES

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
