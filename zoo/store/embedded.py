"""The check a pull adds inside zoo: the manifest embedded in the artifact equals the sidecar.

Formats that embed the manifest (TorchScript and lite archives, ONNX metadata, ...) say how
to read it without running the artifact (``Exporter.read_embedded``). A pulled artifact whose
embedded manifest differs from the sidecar the record names is refused like a bad hash. Kept
apart from the store proper, which never imports the exporters.
"""

from __future__ import annotations

from pathlib import Path

from zoo.store.record import Statement


def embedded_problems(folder: Path, statement: Statement) -> list[str]:
    """Why the artifact in ``folder`` does not carry the sidecar's manifest (empty: it does,
    or its format embeds none that zoo can read in-process)."""
    from pydantic import ValidationError

    from zoo.errors import ZooError
    from zoo.export import get_exporter
    from zoo.export.manifest import Manifest

    try:
        exporter = get_exporter(statement.format)
    except ZooError:
        return []  # no such format installed here: nothing to compare with
    try:
        embedded = exporter.read_embedded(folder / statement.artifact)
    except Exception as exc:  # a format plugin's reader failing on hostile bytes
        return [f"cannot read the manifest embedded in {statement.artifact}: "
                f"{type(exc).__name__}: {exc}"[:300]]
    if embedded is None:
        return []
    try:
        sidecar = Manifest.model_validate_json((folder / statement.manifest).read_bytes())
    except (ValidationError, OSError) as exc:
        return [f"{statement.manifest} is not a valid manifest for this zoo: "
                f"{str(exc).splitlines()[0][:200]}"]
    if embedded != sidecar.embedded().to_json():
        return [f"the manifest embedded in {statement.artifact} differs from "
                f"{statement.manifest}"]
    return []
