"""zoo: a plugin-based registry of semantic-segmentation models for apps and edge devices.

Importing ``zoo`` is cheap: no torch, no plugins loaded. The registry is built on first use.
"""

from __future__ import annotations

from zoo.api import get, list_models, registry
from zoo.errors import (
    CardError,
    DownloadError,
    ExportError,
    HashMismatchError,
    PluginError,
    UnknownModelError,
    UsageError,
    ZooError,
)
from zoo.plugins import hookimpl
from zoo.schema import ModelCard, OutputContract, Preprocessing, WeightsSource

__version__ = "0.1.0"

__all__ = [
    "CardError",
    "DownloadError",
    "ExportError",
    "HashMismatchError",
    "ModelCard",
    "OutputContract",
    "PluginError",
    "Preprocessing",
    "UnknownModelError",
    "UsageError",
    "WeightsSource",
    "ZooError",
    "__version__",
    "get",
    "hookimpl",
    "list_models",
    "registry",
]
