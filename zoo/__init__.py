"""zoo: a plugin-based registry of semantic-segmentation models for apps and edge devices.

Importing ``zoo`` is cheap: no torch, no pydantic, no plugins loaded. The registry is built
on first use; the card classes (pydantic), ``hookimpl`` (pluggy) and the helpers that need
torch, numpy or Pillow (``load``, ``preprocess``, ``postprocess``, ``colorize``) are imported
the first time one of them is looked up. ``read_manifest`` reads an artifact's manifest
(sidecar or embedded) as an app does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from zoo.inference.manifests import read_manifest
    from zoo.manifest import Manifest
    from zoo.plugins import hookimpl
    from zoo.postprocessing import colorize, overlay, postprocess
    from zoo.preprocessing import preprocess
    from zoo.runner import Predictor, load, load_artifact
    from zoo.schema import ModelCard, OutputContract, Preprocessing, WeightsSource

__version__ = "0.1.0"

#: public name -> the module that defines it, imported on first access
_LAZY = {
    "ModelCard": "zoo.schema",
    "OutputContract": "zoo.schema",
    "Preprocessing": "zoo.schema",
    "WeightsSource": "zoo.schema",
    "colorize": "zoo.postprocessing",
    "overlay": "zoo.postprocessing",
    "read_manifest": "zoo.inference.manifests",
    "Manifest": "zoo.manifest",
    "hookimpl": "zoo.plugins",
    "load": "zoo.runner",
    "load_artifact": "zoo.runner",
    "Predictor": "zoo.runner",
    "postprocess": "zoo.postprocessing",
    "preprocess": "zoo.preprocessing",
}

__all__ = [
    "CardError",
    "DownloadError",
    "ExportError",
    "HashMismatchError",
    "Manifest",
    "ModelCard",
    "OutputContract",
    "PluginError",
    "Predictor",
    "Preprocessing",
    "UnknownModelError",
    "UsageError",
    "WeightsSource",
    "ZooError",
    "__version__",
    "colorize",
    "get",
    "hookimpl",
    "list_models",
    "load",
    "load_artifact",
    "overlay",
    "postprocess",
    "preprocess",
    "read_manifest",
    "registry",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
