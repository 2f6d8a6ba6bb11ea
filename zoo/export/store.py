"""The exported-artifact cache under ``ZOO_HOME/artifacts``: list and clear (no torch).

Each entry is a folder named by its cache key holding the artifact, its manifest and its
operator list, with ``<key>.stat.json`` (hash memo) and ``<key>.lock`` beside it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from zoo.manifest import SIDECAR_SUFFIX
from zoo.paths import artifacts_dir


@dataclass(frozen=True)
class ArtifactEntry:
    key: str
    folder: Path
    model: str
    file: str
    format: str
    size: int


def artifact_entries() -> list[ArtifactEntry]:
    """Every complete cached export, sorted by model then file."""
    root = artifacts_dir()
    entries = []
    for manifest in sorted(root.glob(f"*/*{SIDECAR_SUFFIX}")) if root.is_dir() else []:
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            model, export = data["model"]["name"], data["export"]
            fmt, file = export["format"], export["file"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        size = sum(p.stat().st_size for p in manifest.parent.iterdir() if p.is_file())
        entries.append(ArtifactEntry(manifest.parent.name, manifest.parent, model, file, fmt, size))
    return sorted(entries, key=lambda e: (e.model, e.file))


def clear_artifacts(model: str | None = None) -> list[ArtifactEntry]:
    """Remove cached exports (all, or those of ``model``); returns what was removed."""
    root = artifacts_dir()
    removed = []
    for entry in artifact_entries():
        if model is not None and entry.model != model:
            continue
        with FileLock(str(root / f"{entry.key}.lock")):
            shutil.rmtree(entry.folder, ignore_errors=True)
            (root / f"{entry.key}.stat.json").unlink(missing_ok=True)
        removed.append(entry)
    return removed
