"""The Python API for apps: look models up without importing torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zoo.catalog.registry import Registry, default_registry

if TYPE_CHECKING:
    from zoo.catalog.schema import ModelCard


def registry(extra_files: list[str | Path] | None = None) -> Registry:
    """The registry; with ``extra_files``, a fresh one that also merges those YAML files."""
    if extra_files:
        return Registry(extra_files=[Path(p) for p in extra_files])
    return default_registry()


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of registered models, filtered by a glob such as ``'fcn_*'``."""
    return default_registry().names(pattern)


def get(name: str) -> ModelCard:
    """The validated card of model ``name`` (raises :class:`zoo.UnknownModelError`)."""
    return default_registry().get(name)
